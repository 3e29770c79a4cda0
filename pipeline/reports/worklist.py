"""The archive-review worklist as CSV (UTF-8 with BOM, opens in Excel) and XLSX bytes."""

from __future__ import annotations

import io

import pandas as pd

from pipeline.reports.render import translator


def localised_headers(worklist: pd.DataFrame, language: str) -> pd.DataFrame:
    """The worklist with column headers, categories and severities in the report language
    (one row per action item); ``code`` keeps the finding code to filter on."""
    t = translator(language)
    labels = {
        column: worklist[column].map(lambda v, c=column: t(f"{c}.{v}") if v else v)
        for column in ("category", "severity")
        if column in worklist.columns
    }
    frame = worklist.assign(**labels)
    return frame.rename(columns={c: t(f"column.{c}") for c in frame.columns})


def worklist_csv(worklist: pd.DataFrame, language: str) -> bytes:
    """CSV bytes; the BOM makes Excel read the Chinese text as UTF-8."""
    return localised_headers(worklist, language).to_csv(index=False).encode("utf-8-sig")


def worklist_xlsx(worklist: pd.DataFrame, language: str) -> bytes:
    """XLSX bytes with a frozen, filterable header row (streamed: memory and time follow rows)."""
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    frame = localised_headers(worklist, language)
    book = Workbook(write_only=True)
    sheet = book.create_sheet("worklist")
    sheet.freeze_panes = "A2"
    for i, name in enumerate(frame.columns, start=1):
        sample = [len(str(v)) for v in frame[name].head(200) if v is not None and v == v]
        width = max([len(str(name)), *sample])
        sheet.column_dimensions[get_column_letter(i)].width = min(max(10, width + 2), 60)
    last = f"{get_column_letter(max(len(frame.columns), 1))}{len(frame) + 1}"
    sheet.auto_filter.ref = f"A1:{last}"
    sheet.append(list(frame.columns))
    for row in frame.astype(object).where(frame.notna(), None).itertuples(index=False):
        sheet.append([_cell(v) for v in row])
    buffer = io.BytesIO()
    book.save(buffer)
    # Fixed timestamps so the same worklist gives the same bytes.
    return _normalise_xlsx(buffer.getvalue())


def _cell(value: object) -> object:
    """A value openpyxl writes as it is (numpy scalars to Python, timestamps to datetime)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


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
