"""The archive-review worklist as CSV (UTF-8 with BOM, opens in Excel) and XLSX bytes."""

from __future__ import annotations

import io

import pandas as pd

from pipeline.reports.render import translator


def localised_headers(worklist: pd.DataFrame, language: str) -> pd.DataFrame:
    """The worklist with column headers in the report language (one row per action item)."""
    t = translator(language)
    return worklist.rename(columns={c: t(f"column.{c}") for c in worklist.columns})


def worklist_csv(worklist: pd.DataFrame, language: str) -> bytes:
    """CSV bytes; the BOM makes Excel read the Chinese text as UTF-8."""
    return localised_headers(worklist, language).to_csv(index=False).encode("utf-8-sig")


def worklist_xlsx(worklist: pd.DataFrame, language: str) -> bytes:
    """XLSX bytes with a frozen, filterable header row."""
    buffer = io.BytesIO()
    frame = localised_headers(worklist, language)
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        frame.to_excel(writer, index=False, sheet_name="worklist")
        sheet = writer.sheets["worklist"]
        sheet.freeze_panes = "A2"
        sheet.auto_filter.ref = sheet.dimensions
        for column in sheet.columns:
            width = max(len(str(c.value or "")) for c in column[:200])
            sheet.column_dimensions[column[0].column_letter].width = min(max(10, width + 2), 60)
    # Fixed timestamps so the same worklist gives the same bytes.
    return _normalise_xlsx(buffer.getvalue())


def _normalise_xlsx(data: bytes) -> bytes:
    import re
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2000-01-01T00:00:00Z", content
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=(2000, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, content)
    return out.getvalue()
