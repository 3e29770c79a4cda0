"""Data-quality findings for archive staff: what a customer file lacks or holds wrongly.

Grain of ``customer_findings``: one row per (record, field, finding). Findings never
quarantine a row; they go to ``dq_findings`` (partition quarter). Details name the
problem, never the personal value (names, phones and emails stay out of the report).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from stdnum.cn import uscc as stdnum_uscc

from pipeline.memo import Memo, code_version
from pipeline.quarters import Quarter
from pipeline.stages import StageContext, StageResult
from pipeline.transform import standardize
from pipeline.transform.standardize import parse_phone

FINDING_COLUMNS = (
    "quarter",
    "customer_record_id",
    "source_system",
    "dataset",
    "source_record_id",
    "field",
    "finding",
    "severity",
    "detail",
    "account_manager",
)

SEVERITY = {
    "uscc_missing": "high",
    "uscc_invalid": "high",
    "account_manager_missing": "high",
    "key_contact_missing": "high",
    "phone_invalid": "medium",
    "key_contact_phone_missing": "medium",
    "stale_file": "medium",
    "contact_report_missing": "medium",
    "email_invalid": "low",
    "industry_missing": "low",
    "region_missing": "low",
}

_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")
_LETTERS = re.compile(r"[A-Za-z]")
_EXTENSION = re.compile(r"(转|ext\.?|x)\s*\d+\s*$", re.IGNORECASE)


def is_valid_uscc(value: str | None) -> bool:
    """An 18-character unified social credit code with a correct check digit (python-stdnum)."""
    return value is not None and bool(stdnum_uscc.is_valid(value))


def _check_memo(
    engine: Engine | None, kind: str, version: str, check: Callable[[str | None], bool]
) -> Memo[bool]:
    """A yes/no ``check`` remembered in the warehouse as "1" or "0"."""
    return Memo(
        engine,
        kind,
        version,
        check,
        encode=lambda valid: "1" if valid else "0",
        decode=lambda texts: [text == "1" for text in texts],
    )


def phone_memo(engine: Engine | None, region: str = "CN") -> Memo[bool]:
    """:func:`is_valid_phone` for ``region``, remembered in the warehouse (``engine``) so
    that each number is parsed once, not once per run: parsing is most of the findings'
    time. Without an engine each distinct number is parsed once per call."""
    return _check_memo(
        engine,
        f"valid_phone {region}",
        # the landline rule lives in standardize: a change there computes afresh too
        code_version([sys.modules[__name__], standardize], ["phonenumbers"]),
        lambda value: is_valid_phone(value, region),
    )


def uscc_memo(engine: Engine | None) -> Memo[bool]:
    """:func:`is_valid_uscc`, remembered in the warehouse (``engine``) like
    :func:`phone_memo`: python-stdnum checks 100,000 codes in about a second, a run that
    reads them back spends a tenth of that."""
    return _check_memo(
        engine,
        "valid_uscc",
        code_version([sys.modules[__name__]], ["python-stdnum"]),
        is_valid_uscc,
    )


def finding_memos(engine: Engine | None, region: str = "CN") -> tuple[Memo[bool], Memo[bool]]:
    """The remembered checks :func:`customer_findings` uses: (phones, USCCs)."""
    return phone_memo(engine, region), uscc_memo(engine)


def _checked(values: pd.Series, memo: Memo[bool]) -> pd.Series:
    """``memo``'s check of each value, as a boolean Series on ``values``' index."""
    return pd.Series(
        np.array(memo.map(values.to_numpy(dtype=object)), dtype=bool), index=values.index
    )


def valid_phones(
    phones: pd.Series, region: str = "CN", memo: Memo[bool] | None = None
) -> pd.Series:
    """:func:`is_valid_phone` of each value, each distinct number checked once (shared office
    lines repeat), or looked up in ``memo`` (:func:`phone_memo` of the same region)."""
    return _checked(phones, memo if memo is not None else phone_memo(None, region))


def is_valid_phone(value: str | None, region: str = "CN") -> bool:
    """A phone number phonenumbers can read for ``region`` (an extension like 转123 or
    010-65528899-123 is ignored, :func:`pipeline.transform.standardize.parse_phone`).

    Typed letters make a number invalid (phonenumbers would read them as keypad digits).
    For CN, a well-formed landline that phonenumbers' allocation tables do not list (e.g.
    Shanghai 021-8000 xxxx) is accepted when its area code and length are right: archive
    staff fix wrong numbers, not numbers our library does not know yet.
    """
    if value is None:
        return False
    if _LETTERS.search(_EXTENSION.sub("", str(value)).strip()):
        return False
    return parse_phone(value, region) is not None


def is_valid_email(value: str | None) -> bool:
    """``local@domain.tld`` syntax."""
    return value is not None and bool(_EMAIL.match(str(value).strip()))


def _rows(
    frame: pd.DataFrame,
    mask: pd.Series,
    finding: str,
    field: str,
    detail: str,
    dataset: str,
    system: str,
) -> pd.DataFrame:
    hit = frame[mask]
    return pd.DataFrame(
        {
            "customer_record_id": hit["_customer"].to_numpy(dtype=object),
            "source_system": system,
            "dataset": dataset,
            "source_record_id": hit["source_record_id"].to_numpy(dtype=object),
            "field": field,
            "finding": finding,
            "severity": SEVERITY[finding],
            "detail": detail,
        }
    )


def _present(series: pd.Series) -> pd.Series:
    return series.notna() & (series.astype(str).str.strip() != "")


def customer_findings(
    customers: pd.DataFrame,
    contacts: pd.DataFrame,
    contact_log: pd.DataFrame,
    quarter: str,
    as_of: datetime,
    stale_after_days: int = 92,
    phone_region: str = "CN",
    phones: Memo[bool] | None = None,
    usccs: Memo[bool] | None = None,
) -> pd.DataFrame:
    """Findings on valid staged rows of sales_customers, sales_contacts and service_contact_log.

    A file is stale when ``updated_at`` is more than ``stale_after_days`` before ``as_of``
    (the extraction time of the batch, i.e. the day of the review). ``phones``: the
    remembered phone checks (:func:`phone_memo` of ``phone_region``) to use and add to;
    ``usccs`` likewise the USCC checks (:func:`uscc_memo`).
    """
    phones = phones if phones is not None else phone_memo(None, phone_region)
    usccs = usccs if usccs is not None else uscc_memo(None)
    parts: list[pd.DataFrame] = []
    cust = customers.assign(_customer=customers["source_record_id"])
    sales = {"dataset": "sales_customers", "system": "sales"}
    uscc_present = _present(cust["uscc"])
    parts.append(
        _rows(
            cust, ~uscc_present, "uscc_missing", "uscc", "USCC (统一社会信用代码) is blank", **sales
        )
    )
    uscc_ok = _checked(cust["uscc"], usccs)
    parts.append(
        _rows(
            cust,
            uscc_present & ~uscc_ok,
            "uscc_invalid",
            "uscc",
            "USCC fails the format or check digit",
            **sales,
        )
    )
    phone_present = _present(cust["phone"])
    phone_ok = valid_phones(cust["phone"], phone_region, phones)
    parts.append(
        _rows(
            cust,
            phone_present & ~phone_ok,
            "phone_invalid",
            "phone",
            f"phone is not a valid {phone_region} number",
            **sales,
        )
    )
    email_present = _present(cust["email"])
    parts.append(
        _rows(
            cust,
            email_present & ~cust["email"].map(is_valid_email),
            "email_invalid",
            "email",
            "email is not local@domain.tld",
            **sales,
        )
    )
    parts.append(
        _rows(
            cust,
            ~_present(cust["industry"]),
            "industry_missing",
            "industry",
            "industry is blank",
            **sales,
        )
    )
    region_missing = ~_present(cust["province"]) | ~_present(cust["city"])
    parts.append(
        _rows(
            cust,
            region_missing,
            "region_missing",
            "province/city",
            "province or city is blank",
            **sales,
        )
    )
    parts.append(
        _rows(
            cust,
            ~_present(cust["account_manager"]),
            "account_manager_missing",
            "account_manager",
            "no responsible account manager",
            **sales,
        )
    )
    key_customers = set(
        contacts.loc[contacts["is_key_person"].fillna(False).astype(bool), "customer_record_id"]
    )
    no_key = ~cust["source_record_id"].isin(key_customers)
    parts.append(
        _rows(
            cust,
            no_key,
            "key_contact_missing",
            "sales_contacts",
            "no key person (关键人物) on file",
            **sales,
        )
    )
    cutoff = pd.Timestamp(as_of) - timedelta(days=stale_after_days)
    stale = cust["updated_at"].isna() | (cust["updated_at"] < cutoff)
    stale_detail = (
        f"last update more than {stale_after_days} days before {pd.Timestamp(as_of):%Y-%m-%d}"
    )
    parts.append(_rows(cust, stale, "stale_file", "updated_at", stale_detail, **sales))

    cont = contacts.assign(_customer=contacts["customer_record_id"])
    people = {"dataset": "sales_contacts", "system": "sales"}
    for field in ("mobile_phone", "office_phone"):
        present = _present(cont[field])
        ok = valid_phones(cont[field], phone_region, phones)
        parts.append(
            _rows(
                cont,
                present & ~ok,
                "phone_invalid",
                field,
                f"{field} of a contact is not a valid {phone_region} number",
                **people,
            )
        )
    present = _present(cont["email"])
    parts.append(
        _rows(
            cont,
            present & ~cont["email"].map(is_valid_email),
            "email_invalid",
            "email",
            "email of a contact is not local@domain.tld",
            **people,
        )
    )
    is_key = cont["is_key_person"].fillna(False).astype(bool)
    no_phone = ~_present(cont["mobile_phone"]) & ~_present(cont["office_phone"])
    parts.append(
        _rows(
            cont,
            is_key & no_phone,
            "key_contact_phone_missing",
            "mobile_phone/office_phone",
            "key person has no phone number",
            **people,
        )
    )

    log_rows = contact_log.assign(_customer=contact_log["customer_record_id"])
    parts.append(
        _rows(
            log_rows,
            ~_present(log_rows["summary"]),
            "contact_report_missing",
            "summary",
            "contact left no short report",
            "service_contact_log",
            "service",
        )
    )

    findings = (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else pd.DataFrame(columns=list(FINDING_COLUMNS))
    )
    managers = cust.drop_duplicates("source_record_id").set_index("source_record_id")[
        "account_manager"
    ]
    is_sales = findings["source_system"] == "sales"
    findings["account_manager"] = findings["customer_record_id"].map(managers).where(is_sales, None)
    findings["quarter"] = quarter
    return findings[list(FINDING_COLUMNS)].reset_index(drop=True)


FINDING_SOURCES = ("sales_customers", "sales_contacts", "service_contact_log")


def findings_for_quarter(
    customers: pd.DataFrame,
    contacts: pd.DataFrame,
    contact_log: pd.DataFrame,
    quarter: Quarter,
    timezone: str,
    as_of: datetime,
    stale_after_days: int = 92,
    phone_region: str = "CN",
    phones: Memo[bool] | None = None,
    usccs: Memo[bool] | None = None,
) -> pd.DataFrame:
    """The archive review of ``quarter``: findings on the files as known at the quarter's end.

    Grain: one row per (record, field, finding), like :func:`customer_findings`. The review
    day is the quarter's end, or ``as_of`` when the quarter has not ended yet, so a backfill
    of a past quarter judges staleness at that quarter's end. Customers created after the
    quarter are left out, and only the quarter's own contacts must have left a report.
    The staged rows are today's snapshot: a field fixed after the quarter counts as fixed.
    """
    start, end = quarter.start_utc(timezone), quarter.end_utc(timezone)
    review_at = min(pd.Timestamp(as_of), pd.Timestamp(end))
    known = customers["created_at"].isna() | (customers["created_at"] < end)
    in_quarter = (contact_log["contacted_at"] >= start) & (contact_log["contacted_at"] < end)
    return customer_findings(
        customers[known],
        contacts,
        contact_log[in_quarter],
        quarter=str(quarter),
        as_of=review_at.to_pydatetime(),
        stale_after_days=stale_after_days,
        phone_region=phone_region,
        phones=phones,
        usccs=usccs,
    )


def run_quality_findings(ctx: StageContext) -> StageResult:
    """Stage: replace ``dq_findings`` for ``ctx.quarter`` from the staged customer files.

    The quarterly path runs it, so every reported (or backfilled) quarter has the findings
    of its own review, whichever quarter the last ingest ran for.
    """
    from pipeline import warehouse

    staged = {}
    for name in FINDING_SOURCES:
        table = f"stg_{name}"
        if not warehouse.table_exists(ctx.engine, table):
            raise LookupError(
                f"quality_findings for {ctx.quarter} needs {table}: run the ingest (validate) first"
            )
        staged[name] = warehouse.read_table(ctx.engine, table)
    phones, usccs = finding_memos(ctx.engine, ctx.settings.validation.phone_region)
    findings = findings_for_quarter(
        staged["sales_customers"],
        staged["sales_contacts"],
        staged["service_contact_log"],
        ctx.quarter,
        ctx.settings.timezone,
        ctx.extracted_at,
        stale_after_days=ctx.settings.validation.stale_after_days,
        phone_region=ctx.settings.validation.phone_region,
        phones=phones,
        usccs=usccs,
    )
    phones.save()
    usccs.save()
    warehouse.replace_partition(
        ctx.engine, "dq_findings", findings.drop(columns=["quarter"]), quarter=str(ctx.quarter)
    )
    rows_in = sum(len(frame) for frame in staged.values())
    return StageResult(
        "quality_findings",
        rows_in=rows_in,
        rows_out=len(findings),
        detail=findings["finding"].value_counts().to_dict(),
    )
