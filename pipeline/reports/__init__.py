"""Quarterly PDF reports: pure context builders, Jinja2 rendering, WeasyPrint output."""
