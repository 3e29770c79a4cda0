"""Real companies (entities) and the customer records each system keeps about them.

Grain of ``build_entities``: one row per real company. The record builders return
one row per record in a system's customer list (``crm_customer``, ``crm_contact``,
``account``, ``accounts.xlsx``) with the raw column names of docs/sources.md plus
bookkeeping columns that start with an underscore (entity index, injected defect).

These builders loop per company, which is cheap (a few records per company); the
high-volume tables live in ``pipeline.demo.activity``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd

from pipeline.demo import text, vocab
from pipeline.demo.timeline import Timeline

_INDUSTRY_LABELS = tuple(vocab.INDUSTRIES)
_CORE_KEYS = tuple(vocab.CORE_CHARS)
_CITY_WEIGHTS = np.array([c[5] for c in vocab.CITIES]) / sum(c[5] for c in vocab.CITIES)
_INDUSTRY_P = np.array([vocab.INDUSTRY_WEIGHTS[i] for i in _INDUSTRY_LABELS])
_INDUSTRY_P = _INDUSTRY_P / _INDUSTRY_P.sum()

# finding defects of a sales customer record, drawn at most one per record
CUSTOMER_FINDINGS = (
    "uscc_missing",
    "uscc_invalid",
    "phone_invalid",
    "email_invalid",
    "industry_missing",
    "region_missing",
    "account_manager_missing",
    "key_contact_missing",
    "stale_file",
)
_PRIMARY_FINDING_P = (0.012, 0.010, 0.010, 0.008, 0.012, 0.010, 0.012, 0.015, 0.040)
# a forgotten duplicate record is more often without USCC and not kept up to date
_DUPLICATE_FINDING_P = (0.300, 0.010, 0.010, 0.008, 0.012, 0.010, 0.012, 0.015, 0.250)

_SUFFIX_VARIANTS = {
    "有限公司": ("有限责任公司",),
    "有限责任公司": ("有限公司",),
    "股份有限公司": ("（股份）有限公司", "有限公司", "股份公司"),
    "集团有限公司": ("集团", "集团公司", "有限公司"),
}

_PRIMARY_FINDING_CDF = np.cumsum(_PRIMARY_FINDING_P)
_DUPLICATE_FINDING_CDF = np.cumsum(_DUPLICATE_FINDING_P)


FRESH_DAYS = 60  # a file counted fresh was updated at most this many days before as_of
STALE_DAYS = 120  # a stale file was last updated at least this many days before as_of


def _city_short(city: str) -> str:
    return city.removesuffix("市")


def build_entities(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per real company: identity, place, industry, size and contact points.

    About 15% of companies share their core name with an earlier company in another
    city (hard negatives for entity resolution); a third of those also share the
    industry word, so the names differ only by the region prefix.
    """
    city_idx = rng.choice(len(vocab.CITIES), size=n, p=_CITY_WEIGHTS)
    industry_idx = rng.choice(len(_INDUSTRY_LABELS), size=n, p=_INDUSTRY_P)
    legal_idx = rng.choice(len(vocab.LEGAL_FORMS), size=n, p=vocab.LEGAL_FORM_WEIGHTS)
    has_prefix = rng.random(n) < 0.8
    size = rng.lognormal(0.0, 1.5, n)
    rank = size.argsort().argsort() / max(n - 1, 1)
    scale = np.select([rank >= 0.9, rank >= 0.65, rank >= 0.25], [0, 1, 2], 3)
    staff_lo = np.array([1000, 300, 20, 3])[scale]
    staff_hi = np.array([20000, 1000, 300, 20])[scale]
    staff = np.exp(rng.uniform(np.log(staff_lo), np.log(staff_hi))).astype(np.int64)
    revenue_wan = np.round(staff * rng.lognormal(np.log(60.0), 0.5, n), 2)

    rows = []
    taken: set[str] = set()
    for i in range(n):
        city = vocab.CITIES[city_idx[i]]
        industry = _INDUSTRY_LABELS[industry_idx[i]]
        words = vocab.INDUSTRIES[industry]
        industry_word = words[int(rng.integers(0, len(words)))]
        if i > 0 and rng.random() < 0.15:
            twin = rows[int(rng.integers(0, i))]
            core = twin["core"]
            if rng.random() < 0.35:
                industry, industry_word = twin["industry"], twin["industry_word"]
        else:
            length = 2 if rng.random() < 0.75 else 3
            core = "".join(_CORE_KEYS[int(k)] for k in rng.integers(0, len(_CORE_KEYS), length))
            if rng.random() < 0.04:
                core += vocab.LATIN_TOKENS[int(rng.integers(0, len(vocab.LATIN_TOKENS)))]
        legal_form = vocab.LEGAL_FORMS[legal_idx[i]]
        prefix = _city_short(city[1]) if has_prefix[i] else ""
        canonical = f"{prefix}{core}{industry_word}{legal_form}"
        while canonical in taken:  # registered names are unique: move to another city
            city = vocab.CITIES[int(rng.choice(len(vocab.CITIES), p=_CITY_WEIGHTS))]
            prefix = _city_short(city[1])
            canonical = f"{prefix}{core}{industry_word}{legal_form}"
        taken.add(canonical)
        districts = city[6]
        district_no = int(rng.integers(0, len(districts)))
        domain_core = "".join(vocab.CORE_CHARS.get(ch, ch.lower()) for ch in core)
        domain_tail = ("", "tech", "gf", "jt", "88", "china")[int(rng.integers(0, 6))]
        main_is_mobile = scale[i] == 3 and rng.random() < 0.4
        legal_rep, _ = text.person_name(rng)
        rows.append(
            {
                "entity_id": f"E{i + 1:06d}",
                "province": city[0],
                "city": city[1],
                "city_short": _city_short(city[1]),
                "district": districts[district_no],
                "region6": f"{city[2]}{district_no + 1:02d}",
                "area_code": city[3],
                "local_length": city[4],
                "industry": industry,
                "industry_word": industry_word,
                "legal_form": legal_form,
                "prefix": prefix,
                "core": core,
                "canonical_name": canonical,
                "uscc": text.make_uscc(f"{city[2]}{district_no + 1:02d}", rng),
                "landline": text.landline_local(city[4], rng),
                "second_landline": text.landline_local(city[4], rng),
                "mobile": text.mobile_number(rng),
                "main_is_mobile": bool(main_is_mobile),
                "road": vocab.ROADS[int(rng.integers(0, len(vocab.ROADS)))],
                "house_number": int(rng.integers(1, 999)),
                "building": (
                    vocab.BUILDING_WORDS[int(rng.integers(0, len(vocab.BUILDING_WORDS)))]
                    + vocab.BUILDINGS[int(rng.integers(0, len(vocab.BUILDINGS)))]
                    if rng.random() < 0.6
                    else ""
                ),
                "floor": int(rng.integers(1, 40)) if rng.random() < 0.6 else 0,
                "domain": domain_core + domain_tail + vocab.EMAIL_TLDS[int(rng.integers(0, 4))],
                "legal_rep": legal_rep,
            }
        )
    entities = pd.DataFrame(rows)
    entities["size"] = size
    entities["scale"] = scale
    entities["staff_count"] = staff
    entities["revenue_wan"] = revenue_wan
    return entities


def name_variant(entity: dict, rng: np.random.Generator, operations: int) -> str:
    """The company name as another clerk typed it, with ``operations`` random changes.

    Changes: legal-form suffix variant, region prefix dropped or moved into brackets,
    branch qualifier in brackets, a homophone typo in the core name, half- vs
    full-width characters, a stray space.
    """
    prefix, core, word, form = (
        entity["prefix"],
        entity["core"],
        entity["industry_word"],
        entity["legal_form"],
    )
    branch = ""
    full_width, space = False, False
    kinds = rng.choice(
        7, size=operations, replace=False, p=[0.26, 0.16, 0.1, 0.14, 0.1, 0.16, 0.08]
    )
    for kind in kinds.tolist():
        if kind == 0:
            options = _SUFFIX_VARIANTS[form]
            form = options[int(rng.integers(0, len(options)))]
        elif kind == 1:
            prefix = ""
        elif kind == 2 and prefix:
            core, prefix = f"{core}（{prefix}）", ""
        elif kind == 3:
            other = vocab.CITIES[int(rng.integers(0, len(vocab.CITIES)))][1]
            branch_city = _city_short(entity["city"] if rng.random() < 0.6 else other)
            branch = f"（{branch_city}分公司）" if rng.random() < 0.8 else f"{branch_city}分公司"
        elif kind == 4:
            positions = [i for i, ch in enumerate(core) if ch in vocab.HOMOPHONES]
            if positions:
                pos = positions[int(rng.integers(0, len(positions)))]
                core = core[:pos] + vocab.HOMOPHONES[core[pos]] + core[pos + 1 :]
        elif kind == 5:
            full_width = True
        else:
            space = True
    name = f"{prefix}{core}{word}{form}{branch}"
    if space:
        name = f"{prefix} {core}{word}{form}{branch}".strip() if prefix else f"{name} "
    if full_width:
        return text.to_full_width(name)
    return text.to_half_width(name) if rng.random() < 0.4 else name


def address_text(entity: dict, rng: np.random.Generator, vary: bool) -> str:
    """The street address; ``vary`` writes it the way another system would."""
    province = "" if entity["province"] == entity["city"] else entity["province"]
    number = f"{entity['house_number']}号"
    floor = f"{entity['floor']}层" if entity["floor"] else ""
    building = entity["building"]
    city = entity["city"]
    if vary:
        if rng.random() < 0.5:
            province = ""
        if rng.random() < 0.2:
            city = ""
        if rng.random() < 0.3:
            number = f"{entity['house_number']} 号"
        if floor and rng.random() < 0.5:
            floor = (f"{entity['floor']}F", f"{entity['floor']}楼")[int(rng.integers(0, 2))]
        if building and rng.random() < 0.3:
            building = ""
        if rng.random() < 0.15:
            return text.to_full_width(
                f"{province}{city}{entity['district']}{entity['road']}{number}{building}{floor}"
            )
    return f"{province}{city}{entity['district']}{entity['road']}{number}{building}{floor}"


def company_phone(entity: dict, rng: np.random.Generator, allow_extension: bool) -> str:
    """The company's main phone in one of the usual formats."""
    if entity["main_is_mobile"]:
        return text.format_mobile(entity["mobile"], int(rng.integers(0, 5)))
    extension = str(rng.integers(100, 999)) if allow_extension and rng.random() < 0.05 else ""
    return text.format_landline(
        entity["area_code"], entity["landline"], int(rng.integers(0, 7)), extension
    )


def _timestamp(day: float, cal: Timeline, rng: np.random.Generator) -> datetime:
    """A working-hours local time on history day ``day`` (may be negative)."""
    seconds = int(rng.integers(8 * 3600, 19 * 3600))
    return datetime.combine(cal.start, time()) + timedelta(days=int(day), seconds=seconds)


def sales_customers(
    entities: list[dict],
    created_day: np.ndarray,
    duplicate_created_day: np.ndarray,
    managers: list[tuple[str, str]],
    cal: Timeline,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per ``crm_customer`` record: every company once, some a second time.

    ``duplicate_created_day`` is NaN for companies without a duplicate record.
    Each record carries at most one finding defect (column ``_defect``), injected here
    and recorded as ground truth.
    """
    manager_idx = rng.integers(0, len(managers), len(entities))
    rows = []
    for i, entity in enumerate(entities):
        copies = [(created_day[i], False)]
        if not np.isnan(duplicate_created_day[i]):
            copies.append((duplicate_created_day[i], True))
        for day, is_duplicate in copies:
            cumulative = _DUPLICATE_FINDING_CDF if is_duplicate else _PRIMARY_FINDING_CDF
            defect_no = int(np.searchsorted(cumulative, rng.random(), side="right"))
            defect = CUSTOMER_FINDINGS[defect_no] if defect_no < len(CUSTOMER_FINDINGS) else ""
            created = _timestamp(day, cal, rng)
            if defect == "stale_file" and (cal.as_of_day - day) < STALE_DAYS + 30:
                defect = ""  # too young to be stale
            if defect == "stale_file":
                last = cal.as_of_day - STALE_DAYS
                updated_day = (
                    rng.uniform(day, last)
                    if rng.random() < 0.5
                    else rng.uniform(max(day, last - 200), last)
                )
            else:
                updated_day = rng.uniform(max(day, cal.as_of_day - FRESH_DAYS), cal.as_of_day)
            updated = max(created, _timestamp(updated_day, cal, rng))
            if is_duplicate:
                name = name_variant(entity, rng, 2)
                manager = int(rng.integers(0, len(managers)))
            else:
                name = (
                    entity["canonical_name"]
                    if rng.random() < 0.88
                    else name_variant(entity, rng, 1)
                )
                manager = int(manager_idx[i])
            email_kind = rng.random()
            if email_kind < 0.12:
                email = None
            elif email_kind < 0.7:
                mailbox = ("info", "sales", "service", "office")[int(rng.integers(0, 4))]
                email = f"{mailbox}@{entity['domain']}"
            else:
                email = text.person_email(text.person_name(rng)[1], entity["domain"], rng)
            record = {
                "cust_name": name,
                "credit_code": entity["uscc"],
                "legal_rep": entity["legal_rep"],
                "industry": entity["industry"],
                "province": entity["province"],
                "city": entity["city"],
                "address": address_text(entity, rng, vary=is_duplicate),
                "scale": vocab.SCALES[entity["scale"]],
                "staff_count": int(entity["staff_count"]),
                "annual_revenue_wan": float(entity["revenue_wan"]),
                "tel": company_phone(entity, rng, allow_extension=True),
                "email": email,
                "manager_name": managers[manager][0],
                "manager_email": managers[manager][1],
                "created_time": created,
                "updated_time": updated,
                "_entity": i,
                "_is_duplicate": is_duplicate,
                "_manager": manager,
                "_defect": defect,
            }
            _apply_customer_finding(record, defect, rng)
            rows.append(record)
    records = pd.DataFrame(rows)
    records = records.sort_values(["created_time", "_entity"], kind="stable", ignore_index=True)
    records.insert(0, "cust_no", np.arange(1, len(records) + 1))
    return records


def _apply_customer_finding(record: dict, defect: str, rng: np.random.Generator) -> None:
    """Break the one field that ``defect`` names (key-contact and stale handled elsewhere)."""
    if defect == "uscc_missing":
        record["credit_code"] = None
    elif defect == "uscc_invalid":
        record["credit_code"] = text.mistype_uscc(record["credit_code"], rng)
    elif defect == "phone_invalid":
        record["tel"] = text.break_phone(record["tel"].split("转")[0], rng)
    elif defect == "email_invalid":
        email = record["email"] or "info@example.cn"
        record["email"] = text.break_email(email, rng)
    elif defect == "industry_missing":
        record["industry"] = None
    elif defect == "region_missing":
        which = rng.random()
        if which < 0.4:
            record["province"] = None
        if which >= 0.3:
            record["city"] = None
    elif defect == "account_manager_missing":
        record["manager_name"] = None
        record["manager_email"] = None


def sales_contacts(
    customers: pd.DataFrame, entities: list[dict], cal: Timeline, rng: np.random.Generator
) -> pd.DataFrame:
    """One row per ``crm_contact`` (key person) of a sales customer record.

    Records flagged ``key_contact_missing`` get no contact marked key (or no contact
    at all). Duplicate records get one or two contacts of their own. A few non-key
    contacts have no phone at all, which is legitimate and not a defect.
    """
    rows = []
    for record in customers.to_dict("records"):
        entity = entities[record["_entity"]]
        count = (
            1 + int(rng.integers(0, 2))
            if record["_is_duplicate"]
            else 2 + int(rng.binomial(2, 0.5))
        )
        no_key = record["_defect"] == "key_contact_missing"
        if no_key and rng.random() < 0.4:
            continue
        titles = rng.choice(len(vocab.TITLES), size=count, replace=False)
        is_key = np.array(
            [vocab.TITLES[t] in vocab.KEY_TITLES and rng.random() < 0.85 for t in titles]
        )
        if no_key:
            is_key[:] = False
        elif not is_key.any():
            is_key[0] = True
        created_day = (record["created_time"].date() - cal.start).days
        for title, key in zip(titles.tolist(), is_key.tolist(), strict=True):
            name, pinyin = text.person_name(rng)
            defect = ""
            draw = rng.random()
            if draw < 0.01:
                defect = "phone_invalid"
            elif draw < 0.02:
                defect = "email_invalid"
            elif draw < 0.045 and key:
                defect = "key_contact_phone_missing"
            mobile = text.format_mobile(text.mobile_number(rng), int(rng.integers(0, 5)))
            office = None
            if rng.random() < 0.6 and not entity["main_is_mobile"]:
                office = text.format_landline(
                    entity["area_code"],
                    text.landline_local(entity["local_length"], rng),
                    int(rng.integers(0, 7)),
                )
            if rng.random() < 0.05:
                mobile = None
                if office is None and key and not defect:
                    office = text.format_landline(entity["area_code"], entity["landline"], 0)
            email = (
                text.person_email(pinyin, entity["domain"], rng) if rng.random() < 0.75 else None
            )
            if defect == "phone_invalid":
                if mobile is None:
                    mobile = text.format_mobile(text.mobile_number(rng), 0)
                mobile = text.break_phone(mobile, rng)
            elif defect == "email_invalid":
                email = text.break_email(email or f"{pinyin}@{entity['domain']}", rng)
            elif defect == "key_contact_phone_missing":
                mobile, office = None, None
            elif not key and rng.random() < 0.01:
                mobile, office = None, None  # legitimately unusual: non-key person without phone
            birthday = None
            if rng.random() < 0.65:
                birthday = date(1960, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 40)))
            updated_day = rng.uniform(max(created_day, 0), cal.as_of_day)
            rows.append(
                {
                    "cust_no": record["cust_no"],
                    "contact_name": name,
                    "title": vocab.TITLES[title],
                    "mobile": mobile,
                    "office_tel": office,
                    "email": email,
                    "birthday": birthday,
                    "relation": vocab.RELATIONS[
                        int(rng.choice(len(vocab.RELATIONS), p=vocab.RELATION_WEIGHTS))
                    ],
                    "is_key": int(key),
                    "updated_time": max(record["created_time"], _timestamp(updated_day, cal, rng)),
                    "_defect": defect,
                }
            )
    contacts = pd.DataFrame(rows)
    contacts.insert(0, "contact_no", np.arange(1, len(contacts) + 1))
    return contacts


def service_accounts(
    entities: list[dict],
    entity_idx: np.ndarray,
    created_day: np.ndarray,
    cal: Timeline,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per service-desk ``account``: the companies that use the service desk.

    Names, phones and addresses vary from sales; the USCC is often blank and
    sometimes mistyped. These variations are matching work, not file defects.
    """
    rows = []
    for i, day in zip(entity_idx.tolist(), created_day.tolist(), strict=True):
        entity = entities[i]
        uscc_draw = rng.random()
        uscc = None if uscc_draw < 0.55 else entity["uscc"]
        if 0.55 <= uscc_draw < 0.59:
            uscc = text.mistype_uscc(entity["uscc"], rng)
        phone_draw = rng.random()
        if phone_draw < 0.6:
            phone = company_phone(entity, rng, allow_extension=False)
        elif phone_draw < 0.8:
            phone = text.format_mobile(entity["mobile"], int(rng.integers(0, 5)))
        elif phone_draw < 0.9:
            phone = text.format_landline(
                entity["area_code"], entity["second_landline"], int(rng.integers(0, 7))
            )
        else:
            phone = None
        email = None
        if rng.random() < 0.5:
            email = (
                f"{('service', 'it', 'admin', 'info')[int(rng.integers(0, 4))]}@{entity['domain']}"
            )
        operations = 1 + int(rng.random() < 0.35) + int(rng.random() < 0.1)
        modified_day = rng.uniform(max(day, 0), cal.as_of_day)
        rows.append(
            {
                "account_name": name_variant(entity, rng, operations),
                "uscc": uscc,
                "phone": phone,
                "email": email,
                "address": address_text(entity, rng, vary=True) if rng.random() < 0.85 else None,
                "modified_at": _timestamp(modified_day, cal, rng),
                "_entity": i,
                "_created_day": day,
            }
        )
    accounts = pd.DataFrame(rows).sort_values(["_created_day", "_entity"], ignore_index=True)
    accounts.insert(0, "account_id", np.arange(1, len(accounts) + 1))
    return accounts


def finance_accounts(
    entities: list[dict],
    entity_idx: np.ndarray,
    first_invoice_day: np.ndarray,
    cal: Timeline,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per finance customer account (``accounts.xlsx``): every invoiced company.

    Finance keeps the invoicing name (often exactly the registered name) and the tax
    id (USCC), which is sometimes blank or mistyped.
    """
    rows = []
    for i, day in zip(entity_idx.tolist(), first_invoice_day.tolist(), strict=True):
        entity = entities[i]
        uscc_draw = rng.random()
        uscc = entity["uscc"] if uscc_draw >= 0.1 else None
        if 0.08 <= uscc_draw < 0.1:
            uscc = text.mistype_uscc(entity["uscc"], rng)
        phone_draw = rng.random()
        if phone_draw < 0.7:
            phone = company_phone(entity, rng, allow_extension=False)
        elif phone_draw < 0.85:
            phone = text.format_mobile(text.mobile_number(rng), int(rng.integers(0, 5)))
        else:
            phone = None
        name = entity["canonical_name"] if rng.random() < 0.5 else name_variant(entity, rng, 1)
        credit = float(np.clip(np.round(entity["size"] * 200_000, -4), 10_000, 20_000_000))
        updated_day = rng.uniform(max(day, cal.as_of_day - 700), cal.as_of_day)
        rows.append(
            {
                "客户编号": 0,
                "客户名称": name,
                "纳税人识别号": uscc,
                "联系电话": phone,
                "地址": address_text(entity, rng, vary=True) if rng.random() < 0.9 else None,
                "信用额度(元)": credit,
                "更新日期": cal.start + timedelta(days=int(updated_day)),
                "_entity": i,
                "_created_day": day,
            }
        )
    accounts = pd.DataFrame(rows).sort_values(["_created_day", "_entity"], ignore_index=True)
    accounts["客户编号"] = np.arange(1, len(accounts) + 1)
    return accounts
