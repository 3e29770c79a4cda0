"""Render report HTML with Jinja2 (autoescape on) and simple JSON message catalogs.

Catalogs live in ``reports/templates/i18n/<language>.json`` (``zh_CN`` default, ``en``): a flat
key -> text map. Templates call ``t("key")``; a missing key renders the key itself so a gap
is visible in the PDF rather than silently blank.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "reports" / "templates"
LANGUAGES = ("zh_CN", "en")


def normalise_language(language: str) -> str:
    """Map ``zh-CN``/``zh``/``en-US`` style tags onto a catalog name."""
    tag = (language or "zh_CN").replace("-", "_").lower()
    return "en" if tag.startswith("en") else "zh_CN"


@lru_cache(maxsize=4)
def catalog(language: str) -> dict[str, str]:
    """The message catalog of ``language`` (read once per process)."""
    path = TEMPLATE_DIR / "i18n" / f"{normalise_language(language)}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def translator(language: str):
    """A ``t(key, **fields)`` function for one language."""
    messages = catalog(language)

    def t(key: str, **fields: Any) -> str:
        # Data-driven keys (segment codes) fall back to the code itself.
        text = messages.get(key, key.split(".", 1)[-1])
        return text.format(**fields) if fields else text

    return t


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html", "xml"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(template: str, context: dict[str, Any]) -> str:
    """Render ``template`` (a file in reports/templates/) with ``context``; all values autoescaped."""
    env = _environment()
    language = context.get("language", "zh_CN")
    return env.get_template(template).render(
        **context, t=translator(language), html_lang="en" if language == "en" else "zh-CN"
    )
