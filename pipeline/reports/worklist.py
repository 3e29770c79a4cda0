"""The archive-review worklist as CSV (UTF-8 with BOM, opens in Excel) and XLSX bytes."""

from __future__ import annotations

import io
from datetime import date, datetime

import numpy as np
import pandas as pd

from pipeline.reports.render import translator

# Workbook properties fixed, so that the same worklist gives the same bytes.
_CREATED = datetime(2000, 1, 1)


def localised_headers(worklist: pd.DataFrame, language: str) -> pd.DataFrame:
    """The worklist with column headers, categories and severities in the report language
    (one row per action item); ``code`` keeps the finding code to filter on."""
    t = translator(language)
    labels = {
        column: worklist[column].map(
            lambda v, c=column: t(f"{c}.{v}") if isinstance(v, str) and v else v
        )
        for column in ("category", "severity")
        if column in worklist.columns
    }
    frame = worklist.assign(**labels)
    return frame.rename(columns={c: t(f"column.{c}") for c in frame.columns})


# A cell starting with one of these is a formula to Excel, LibreOffice and Sheets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV bytes for people who open them in a spreadsheet: the BOM makes Excel read the Chinese
    text as UTF-8, and text that would start a formula (``=HYPERLINK(...)`` in a customer name)
    gets a leading apostrophe, so it is shown, never run."""
    text = frame.assign(
        **{
            c: frame[c].map(_as_text)
            for c in frame.columns
            if frame[c].dtype == object or isinstance(frame[c].dtype, pd.StringDtype)
        }
    )
    return text.to_csv(index=False).encode("utf-8-sig")


def worklist_csv(worklist: pd.DataFrame, language: str) -> bytes:
    """The worklist as CSV (see :func:`csv_bytes`)."""
    return csv_bytes(localised_headers(worklist, language))


def worklist_xlsx(worklist: pd.DataFrame, language: str) -> bytes:
    """XLSX bytes with a frozen, filterable header row, written row by row by XlsxWriter
    (memory and time follow rows). Text is always written as text: a value such as
    ``=HYPERLINK(...)`` in a customer name is shown, never run as a formula."""
    import xlsxwriter

    frame = localised_headers(worklist, language)
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(
        buffer,
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "nan_inf_to_errors": True,
        },
    )
    book.set_properties({"created": _CREATED})
    sheet = book.add_worksheet("worklist")
    bold, day = book.add_format({"bold": True}), book.add_format({"num_format": "yyyy-mm-dd"})
    for i, name in enumerate(frame.columns):
        sample = [len(str(v)) for v in frame[name].head(200) if v is not None and v == v]
        width = max([len(str(name)), *sample])
        sheet.set_column(i, i, min(max(10, width + 2), 60))
        sheet.write_string(0, i, str(name), bold)
    sheet.freeze_panes(1, 0)
    sheet.autofilter(0, 0, len(frame), max(len(frame.columns) - 1, 0))
    columns = [frame[c].astype(object).where(frame[c].notna(), None).to_numpy() for c in frame]
    text = sheet.write_string
    for row in range(len(frame)):
        for column, values in enumerate(columns):
            value = values[row]
            if isinstance(value, str):
                text(row + 1, column, value)
            elif value is not None:
                _write(sheet, row + 1, column, value, day)
    book.close()
    return buffer.getvalue()


def _write(sheet, row: int, column: int, value: object, day) -> None:
    """A cell that is not text: booleans, numbers, dates (as dates), else its text."""
    if isinstance(value, bool | np.bool_):
        sheet.write_boolean(row, column, bool(value))
    elif isinstance(value, int | float | np.integer | np.floating):
        sheet.write_number(row, column, float(value))
    elif isinstance(value, datetime | date):
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize(None) if stamp.tzinfo is not None else stamp
        sheet.write_datetime(row, column, stamp.to_pydatetime(), day)
    else:
        sheet.write_string(row, column, str(value))
