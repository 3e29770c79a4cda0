"""Deduplicate any CSV export: ``crm-pipeline dedupe INPUT.csv --id-column COL --fields F.yaml``.

``FIELDS.yaml`` maps column names to roles::

    company: company_name
    contact: person_name
    street: address
    tel: phone
    mail: email
    tax_no: identifier
    founded: date
    notes: free_text

Several columns may share a role: text roles (company_name, person_name, address,
free_text) are joined into one value per record (``first_name`` + ``last_name``,
``street`` + ``city`` + ``zip``); phone, email, identifier and date columns are compared
one by one. The inverted form (``company_name: firm`` or ``address: [street, city]``) is
accepted too.

Writes ``DIR/pairs.csv`` (one row per scored pair with probability at or above the review
band: ``id_l,id_r,match_probability``) and ``DIR/clusters.csv`` (one row per input record:
``id,cluster_id``).

The input may be UTF-8 (with or without BOM), UTF-16 with BOM, GBK/GB18030 or Windows-1252;
comma, tab, semicolon or pipe separated. Blank cells and placeholders (``NULL``, ``N/A``,
``-``, ``未知``) are missing values; rows with every cell blank are skipped. Problems that
make the result meaningless (no header, missing columns, blank or duplicate ids, malformed
rows, unknown roles) raise :class:`DedupeInputError` naming the file, the row (counting the
header as row 1) and the rule broken.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from pipeline.settings import ResolutionSettings
from pipeline.transform.resolve import MatchField, cluster, score_pairs
from pipeline.transform.standardize import (
    map_unique,
    phone_key,
    split_company_name,
    standardize_any_address,
    standardize_date,
    standardize_email,
    standardize_free_text,
    standardize_identifier,
    standardize_person_name,
)

log = logging.getLogger(__name__)

ROLES = (
    "company_name",
    "person_name",
    "address",
    "phone",
    "email",
    "identifier",
    "date",
    "free_text",
)
# Other spellings of the roles people write in FIELDS.yaml.
ROLE_ALIASES = {
    "company": "company_name",
    "organisation": "company_name",
    "organization": "company_name",
    "org": "company_name",
    "business_name": "company_name",
    "person": "person_name",
    "contact_name": "person_name",
    "full_name": "person_name",
    "telephone": "phone",
    "tel": "phone",
    "mobile": "phone",
    "phone_number": "phone",
    "e_mail": "email",
    "mail": "email",
    "id": "identifier",
    "code": "identifier",
    "tax_id": "identifier",
    "birth_date": "date",
    "dob": "date",
    "text": "free_text",
    "notes": "free_text",
}
TEXT_ROLES = ("company_name", "person_name", "address", "free_text")
SEPARATORS = (",", "\t", ";", "|")
# Rows quoted in an error message.
SHOWN_ROWS = 5


class DedupeInputError(ValueError):
    """Bad dedupe input; the message names the file, the row (when there is one) and the rule."""


def _role(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    return key if key in ROLES else ROLE_ALIASES.get(key)


def read_fields(fields_yaml: Path, columns: list[str] | None = None) -> dict[str, str]:
    """The column -> role map of a FIELDS.yaml file; unknown roles are an error.

    With the input's ``columns`` given, the inverted form ``role: column`` (or ``role:
    [columns]``) is recognised when every key is a role and none is a column.
    """
    path = Path(fields_yaml)
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as error:
        raise DedupeInputError(f"{path}: not valid YAML ({error})") from error
    except UnicodeDecodeError as error:
        raise DedupeInputError(f"{path}: not UTF-8 text ({error})") from error
    if not isinstance(mapping, dict) or not mapping:
        raise DedupeInputError(
            f"{path} must map column names to roles (e.g. 'company: company_name'); "
            f"roles are {', '.join(ROLES)}"
        )
    keys_are_roles = all(_role(str(key)) for key in mapping)
    if columns is not None and keys_are_roles and not set(map(str, mapping)) & set(columns):
        inverted: dict[str, str] = {}
        for role, names in mapping.items():
            for name in names if isinstance(names, list) else [names]:
                inverted[str(name)] = str(role)
        mapping = inverted
    bad = {str(column): role for column, role in mapping.items() if _role(role) is None}
    if bad:
        raise DedupeInputError(
            f"{path}: unknown roles {bad}; roles are {', '.join(ROLES)} "
            "(rule: every column maps to one known role)"
        )
    return {str(column): str(_role(role)) for column, role in mapping.items()}


def _decode(path: Path, raw: bytes) -> str:
    """The file's text: UTF-8 (BOM or not), UTF-16 with BOM, GBK/GB18030 or Windows-1252."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        try:
            text = raw.decode("gb18030")
            wide = [c for c in text if ord(c) > 127]
            # Real GBK text is mostly common Chinese; Latin-1 bytes read as GBK are not.
            common = sum(1 for c in wide if _is_gb2312(c))
            if not wide or common / len(wide) >= 0.9:
                log.warning("%s is not UTF-8: read as GBK/GB18030", path)
                return text
        except UnicodeDecodeError:
            pass
        try:
            text = raw.decode("cp1252")
            log.warning("%s is not UTF-8: read as Windows-1252", path)
            return text
        except UnicodeDecodeError:
            line = raw[: utf8_error.start].count(b"\n") + 1
            raise DedupeInputError(
                f"{path} row {line}: byte 0x{raw[utf8_error.start]:02x} at offset "
                f"{utf8_error.start} is not UTF-8, GBK or Windows-1252 "
                "(rule: the file is text in one of those encodings)"
            ) from utf8_error


def _is_gb2312(char: str) -> bool:
    try:
        char.encode("gb2312")
        return True
    except UnicodeEncodeError:
        return False


def read_input(input_csv: Path) -> pd.DataFrame:
    """The export as text cells (blank = ""), header cleaned; fully blank rows dropped."""
    path = Path(input_csv)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DedupeInputError(f"{path}: cannot read the file ({error.strerror})") from error
    text = _decode(path, raw)
    if not text.strip():
        raise DedupeInputError(f"{path}: the file is empty (rule: a header row names the columns)")
    first_line = text.lstrip().splitlines()[0]
    separator = ","
    if "," not in first_line:
        separator = next((s for s in SEPARATORS[1:] if s in first_line), ",")
    csv.field_size_limit(2**31 - 1)
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=separator,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError as error:
        raise DedupeInputError(
            f"{path}: no header row (rule: the first row names the columns)"
        ) from error
    except pd.errors.ParserError as error:
        detail = str(error).replace("Error tokenizing data. C error: ", "")
        raise DedupeInputError(
            f"{path}: malformed CSV: {detail} (rule: every row has as many fields as the "
            "header; quote fields that contain the separator)"
        ) from error
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    blank = (df.apply(lambda column: column.str.strip()) == "").all(axis=1) if len(df) else None
    if blank is not None and blank.any():
        log.warning("%s: skipping %s rows with every cell blank", path, int(blank.sum()))
        df = df[~blank]
    return df


def _rows(index: pd.Index) -> str:
    """Row numbers as in a spreadsheet (header = row 1), the first few."""
    rows = [str(i + 2) for i in index[:SHOWN_ROWS]]
    more = f" and {len(index) - SHOWN_ROWS} more" if len(index) > SHOWN_ROWS else ""
    return ", ".join(rows) + more


def check_input(df: pd.DataFrame, id_column: str, fields: dict[str, str], source: str) -> str:
    """Check ids and columns; returns the id column's name as in the header.

    An id column differing only in case or surrounding spaces is accepted.
    """
    columns = list(df.columns)
    if id_column not in columns:
        close = [c for c in columns if c.strip().lower() == id_column.strip().lower()]
        if len(close) != 1:
            raise DedupeInputError(
                f"{source}: id column {id_column!r} is not in the header {columns} "
                "(rule: --id-column names a column of the file)"
            )
        log.warning("%s: using column %r for --id-column %r", source, close[0], id_column)
        id_column = close[0]
    missing = [c for c in fields if c not in columns]
    if missing:
        raise DedupeInputError(
            f"{source}: columns {missing} named in FIELDS.yaml are not in the header {columns} "
            "(rule: every FIELDS.yaml column exists in the file)"
        )
    ids = df[id_column].astype(str)
    blank = df.index[(ids.str.strip() == "").to_numpy()]
    if len(blank):
        raise DedupeInputError(
            f"{source} row {_rows(blank)}: blank id in column {id_column!r} "
            "(rule: every record has an id)"
        )
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        rows = df.index[(ids == first).to_numpy()]
        raise DedupeInputError(
            f"{source} rows {_rows(rows)}: id {first!r} appears more than once in column "
            f"{id_column!r} ({duplicated.nunique()} ids repeated; rule: ids are unique)"
        )
    return id_column


def _company(value: object) -> str | None:
    return split_company_name(value).core


STANDARDIZERS: dict[str, Callable[[object], str | None]] = {
    "company_name": _company,
    "person_name": standardize_person_name,
    "address": standardize_any_address,
    "phone": phone_key,
    "email": standardize_email,
    "identifier": standardize_identifier,
    "date": standardize_date,
    "free_text": standardize_free_text,
}


def _match_field(name: str, key: str, role: str) -> MatchField:
    if role == "company_name":
        return MatchField(name, key, "text", (0.7, 0.5, 0.3), block=True, block_prefix=True)
    if role == "person_name":
        return MatchField(name, key, "text", (0.7, 0.4), block=True)
    if role == "address":
        return MatchField(name, key, "text", (0.6, 0.3), block=True)
    if role == "email":
        return MatchField(name, key, "email", block=True)
    if role == "date":
        return MatchField(name, key, "date")
    if role == "free_text":
        return MatchField(name, key, "text", (0.6, 0.3))
    return MatchField(name, key, block=True)  # phone, identifier: exact


def standardize_roles(
    df: pd.DataFrame, id_column: str, fields: dict[str, str]
) -> tuple[pd.DataFrame, tuple[MatchField, ...]]:
    """Standardized match columns per role and the fields to compare; one row per record."""
    missing = [c for c in [id_column, *fields] if c not in df.columns]
    if missing:
        raise DedupeInputError(f"columns {missing} are not in the input (has {list(df.columns)})")
    out = pd.DataFrame({"unique_id": df[id_column].astype(str).to_numpy()})
    match_fields = []
    by_role: dict[str, list[str]] = {}
    for column, role in fields.items():
        by_role.setdefault(role, []).append(column)
    for role in ROLES:
        columns = by_role.get(role, [])
        if role in TEXT_ROLES and len(columns) > 1:
            # first_name + last_name, street + city: one value per record.
            joined = df[columns].astype(str).agg(" ".join, axis=1)
            groups = [("+".join(columns), joined)]
        else:
            groups = [(column, df[column]) for column in columns]
        for index, (name, values) in enumerate(groups):
            key = f"{role}_{index}"
            out[key] = pd.Series(
                map_unique(values.reset_index(drop=True), STANDARDIZERS[role]), dtype=object
            )
            if out[key].notna().any():
                match_fields.append(_match_field(name, key, role))
            else:
                log.warning("column %s (%s) has no usable value: not compared", name, role)
    return out, tuple(match_fields)


def dedupe_frame(
    df: pd.DataFrame,
    id_column: str,
    fields: dict[str, str],
    settings: ResolutionSettings | None = None,
    source: str = "input",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Resolve one table: ``(pairs, clusters)`` as written by :func:`dedupe`."""
    settings = settings or ResolutionSettings()
    id_column = check_input(df, id_column, fields, source)
    records, match_fields = standardize_roles(df, id_column, fields)
    lower = min(settings.review_lower, settings.match_threshold)
    pairs = pd.DataFrame(columns=["id_l", "id_r", "match_probability"])
    if match_fields and len(records) >= 2:
        scored = score_pairs(records, threshold=lower, fields=match_fields)
        pairs = scored.pairs[scored.pairs["match_probability"] >= lower]
        pairs = pairs[["id_l", "id_r", "match_probability"]].reset_index(drop=True)
    elif not match_fields:
        log.warning("%s: no field has a usable value: every record is its own cluster", source)
    clusters = cluster(records["unique_id"], pairs, settings.match_threshold)
    clusters = clusters.rename(columns={"unique_id": "id"})
    return pairs, clusters


def dedupe(
    input_csv: Path,
    id_column: str,
    fields_yaml: Path,
    out_dir: Path,
    settings: ResolutionSettings | None = None,
) -> tuple[Path, Path]:
    """Deduplicate ``input_csv`` and write ``pairs.csv`` and ``clusters.csv`` into ``out_dir``."""
    out_dir = Path(out_dir)
    rule = "(rule: --out names a folder that can be created and written)"
    if out_dir.exists() and not out_dir.is_dir():
        raise DedupeInputError(f"{out_dir}: --out is a file, not a folder {rule}")
    df = read_input(input_csv)
    fields = read_fields(fields_yaml, list(df.columns))
    pairs, clusters = dedupe_frame(df, id_column, fields, settings, source=str(input_csv))
    pairs_path, clusters_path = out_dir / "pairs.csv", out_dir / "clusters.csv"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        pairs.to_csv(pairs_path, index=False)
        clusters.to_csv(clusters_path, index=False)
    except OSError as error:
        raise DedupeInputError(
            f"{error.filename or out_dir}: cannot write the results ({error.strerror}) {rule}"
        ) from error
    log.info(
        "dedupe %s: %s records, %s pairs, %s clusters",
        input_csv,
        len(df),
        len(pairs),
        clusters["cluster_id"].nunique(),
    )
    return pairs_path, clusters_path
