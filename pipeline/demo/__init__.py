"""Demo source data: the three source systems plus ground truth (``crm-pipeline demo-data``)."""

from pipeline.demo.generate import generate_demo_sources

__all__ = ["generate_demo_sources"]
