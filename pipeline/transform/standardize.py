"""Pure standardization of customer attributes for matching and golden records.

Every function here takes plain values (or a DataFrame) and returns new values; nothing
touches the outside world except the memos (:func:`customer_memos`), which remember the
slow parts' results in the warehouse. Grain of :func:`standardize_customers`: one row per source
customer record in, one row per source customer record out.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import TypeVar

import pandas as pd
import phonenumbers
from sqlalchemy.engine import Engine
from stdnum.cn import uscc as stdnum_uscc

from pipeline.memo import Memo, code_version

T = TypeVar("T")

# Longest first so 股份有限公司 wins over 有限公司.
LEGAL_FORMS = (
    "股份有限公司",
    "有限责任公司",
    "集团股份有限公司",
    "集团有限责任公司",
    "集团有限公司",
    "有限公司",
    "股份公司",
    "集团公司",
    "集团",
    "公司",
)
LEGAL_FORMS = tuple(sorted(set(LEGAL_FORMS), key=len, reverse=True))
# Latin-script legal forms, as word sequences stripped from the end of a name word by word
# (never inside a word: "Texaco" keeps its "co"). Longest first.
LATIN_LEGAL_FORMS = tuple(
    sorted(
        {
            tuple(form.split())
            for form in (
                "co ltd",
                "co limited",
                "company limited",
                "company ltd",
                "pty ltd",
                "pty limited",
                "pte ltd",
                "pvt ltd",
                "private limited",
                "public limited company",
                "limited liability company",
                "limited",
                "ltd",
                "inc",
                "incorporated",
                "corp",
                "corporation",
                "company",
                "co",
                "cos",
                "llc",
                "l l c",
                "plc",
                "llp",
                "lp",
                "gmbh",
                "ag",
                "sa",
                "s a",
                "sas",
                "sarl",
                "srl",
                "spa",
                "s p a",
                "bv",
                "b v",
                "nv",
                "n v",
                "oy",
                "ab",
                "kk",
                "pte",
                "pty",
                "pvt",
            )
        },
        key=len,
        reverse=True,
    )
)
# Common abbreviations in Latin-script names and addresses, to one spelling.
LATIN_WORDS = {
    "&": "and",
    "intl": "international",
    "int'l": "international",
    "mfg": "manufacturing",
    "mfrs": "manufacturers",
    "svc": "service",
    "svcs": "services",
    "bros": "brothers",
    "mgmt": "management",
    "grp": "group",
    "hldgs": "holdings",
    "assoc": "associates",
    "assocs": "associates",
    "natl": "national",
    "dept": "department",
    "ctr": "center",
    "centre": "center",
    "univ": "university",
    "labs": "laboratories",
    "lab": "laboratory",
    "sys": "systems",
    "tech": "technology",
    "techs": "technologies",
    "st": "street",
    "str": "street",
    "ave": "avenue",
    "av": "avenue",
    "rd": "road",
    "blvd": "boulevard",
    "dr": "drive",
    "ln": "lane",
    "ct": "court",
    "pl": "place",
    "sq": "square",
    "hwy": "highway",
    "pkwy": "parkway",
    "ste": "suite",
    "apt": "apartment",
    "fl": "floor",
    "bldg": "building",
    "n": "north",
    "s": "south",
    "e": "east",
    "w": "west",
    "ne": "northeast",
    "nw": "northwest",
    "se": "southeast",
    "sw": "southwest",
}
# Honorifics and generational suffixes: not part of a person's name for matching.
PERSON_TITLES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "jr", "sr", "ii", "iii", "iv"}
)
# Values that mean "no value" in exports.
NULLISH = frozenset(
    {
        "null",
        "(null)",
        "<null>",
        "none",
        "nil",
        "nan",
        "n/a",
        "na",
        "n.a.",
        "#n/a",
        "-",
        "--",
        "---",
        "?",
        "unknown",
        "not available",
        "tbd",
        "无",
        "空",
        "未知",
        "暂无",
        "不详",
    }
)
# Longest value used for matching: a 1 MB free-text cell must not slow every comparison.
MAX_MATCH_CHARS = 300

PROVINCES = (
    "北京",
    "天津",
    "上海",
    "重庆",
    "河北",
    "山西",
    "辽宁",
    "吉林",
    "黑龙江",
    "江苏",
    "浙江",
    "安徽",
    "福建",
    "江西",
    "山东",
    "河南",
    "湖北",
    "湖南",
    "广东",
    "海南",
    "四川",
    "贵州",
    "云南",
    "陕西",
    "甘肃",
    "青海",
    "台湾",
    "内蒙古",
    "广西",
    "西藏",
    "宁夏",
    "新疆",
    "香港",
    "澳门",
)
MUNICIPALITIES = {"北京", "天津", "上海", "重庆"}
# Prefecture-level cities that commonly prefix company names without their 市 suffix.
CITIES = (
    "广州",
    "深圳",
    "珠海",
    "汕头",
    "佛山",
    "东莞",
    "中山",
    "惠州",
    "江门",
    "湛江",
    "肇庆",
    "南京",
    "苏州",
    "无锡",
    "常州",
    "南通",
    "徐州",
    "扬州",
    "镇江",
    "盐城",
    "泰州",
    "连云港",
    "淮安",
    "宿迁",
    "杭州",
    "宁波",
    "温州",
    "嘉兴",
    "湖州",
    "绍兴",
    "金华",
    "台州",
    "丽水",
    "衢州",
    "舟山",
    "合肥",
    "芜湖",
    "蚌埠",
    "安庆",
    "马鞍山",
    "福州",
    "厦门",
    "泉州",
    "漳州",
    "莆田",
    "南昌",
    "赣州",
    "九江",
    "济南",
    "青岛",
    "烟台",
    "潍坊",
    "淄博",
    "临沂",
    "济宁",
    "威海",
    "郑州",
    "洛阳",
    "开封",
    "新乡",
    "南阳",
    "武汉",
    "宜昌",
    "襄阳",
    "长沙",
    "株洲",
    "湘潭",
    "岳阳",
    "衡阳",
    "南宁",
    "柳州",
    "桂林",
    "海口",
    "三亚",
    "成都",
    "绵阳",
    "德阳",
    "宜宾",
    "贵阳",
    "遵义",
    "昆明",
    "大理",
    "西安",
    "咸阳",
    "宝鸡",
    "兰州",
    "西宁",
    "银川",
    "乌鲁木齐",
    "拉萨",
    "呼和浩特",
    "包头",
    "石家庄",
    "唐山",
    "保定",
    "廊坊",
    "邯郸",
    "秦皇岛",
    "太原",
    "大同",
    "沈阳",
    "大连",
    "鞍山",
    "长春",
    "吉林",
    "哈尔滨",
    "大庆",
)
_PROVINCE_SUFFIX = re.compile(
    r"^(" + "|".join(sorted(PROVINCES, key=len, reverse=True)) + r")"
    r"(省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?"
)
_CITY = re.compile(r"^([\u4e00-\u9fff]{1,7}?(市|自治州|地区|盟))")
# Half-width after NFKC, plus the CJK brackets NFKC keeps: 【】 〔〕 〖〗.
_BRACKETS = re.compile(r"[(\[{【〔〖]([^)\]}】〕〗]*)[)\]}】〕〗]")
_PUNCT = re.compile(r"[\s,.;:!?'\"`·、,。;:!?“”‘’《》<>\-_/\\|&*#@~^=+]+")
_EXTENSION = re.compile(r"(转|分机|ext\.?|x|#)\s*(\d{1,6})\s*$", re.IGNORECASE)
# 010-65528899-123: an extension after a dash, read as one only when the digits before it
# are a whole number and all the digits together are none.
_DASH_EXTENSION = re.compile(r"[-‐‑–—－]\s*(\d{1,5})\s*$")
_USCC_SHAPE = re.compile(r"^[0-9A-Z]{2}\d{6}[0-9A-Z]{10}$")
_EMAIL = re.compile(r"^[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}$")


# Invisible format characters that pasting brings along (zero-width space and joiners,
# word joiner, byte order mark, soft hyphen): deleted, so "9111…\u200b" is the USCC it shows.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"))


def normalize_text(value: object) -> str | None:
    """NFKC (full-width to half-width), invisible characters deleted, Latin lower case,
    collapsed whitespace; blank -> None."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    text = unicodedata.normalize("NFKC", str(value)).translate(_INVISIBLE)
    text = text.replace("\u3000", " ")
    text = re.sub(r"\s+", " ", text).strip().lower()
    return text or None


def strip_punctuation(text: str | None) -> str | None:
    """Remove whitespace and punctuation (ASCII and CJK) from already-normalized text."""
    if text is None:
        return None
    out = _PUNCT.sub("", text)
    return out or None


_TOKEN = re.compile(r"[a-z0-9']+|&|[^\sa-z0-9'&]+")
_LATIN = re.compile(r"[a-z]")
# Word boundaries: anything but letters/digits/CJK, and a switch from CJK to Latin.
_WORD_SPLIT = re.compile(r"[^a-z0-9\u4e00-\u9fff]+|(?<=[\u4e00-\u9fff])(?=[a-z0-9])")


def is_nullish(value: object) -> bool:
    """True for blanks and the placeholders exports use for "no value" (NULL, N/A, -, 未知)."""
    text = normalize_text(value)
    return text is None or text in NULLISH


# Whitespace (any Unicode separator) and the invisible characters normalize_text deletes
_NOT_COUNTED = r"[\s\p{Z}\x{85}\x{200b}-\x{200f}\x{2060}\x{feff}\x{00ad}]+"
# A placeholder, so compacted, is at most as long as the longest and made of their letters
_PLACEHOLDER_SHAPE = "(?i)^[{}]{{0,{}}}$".format(
    "".join(sorted({re.escape(c) for c in "".join(NULLISH) if not c.isspace()})),
    max(map(len, NULLISH)),
)


def placeholders(values: pd.Series) -> set[str]:
    """The texts among ``values`` that :func:`is_nullish` calls placeholders.

    Only a text that, normalized in Arrow (NFKC, whitespace and invisible characters left
    out), is no longer than the longest placeholder and made of their letters can be one;
    only those are looked at one by one. (Looking at every short value was 10 s of the
    golden records at 100,000 customers: person names are all short.)
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    unique = pd.unique(values.dropna().astype(str).to_numpy(dtype=object))
    if not len(unique):
        return set()
    text = pc.utf8_normalize(pa.array(unique, type=pa.string()), "NFKC")
    compact = pc.replace_substring_regex(text, _NOT_COUNTED, "")
    maybe = pc.match_substring_regex(compact, _PLACEHOLDER_SHAPE)
    return {v for v in unique[maybe.to_numpy(zero_copy_only=False)] if is_nullish(v)}


def latin_words(text: str) -> list[str]:
    """Words of already-normalized text, abbreviations spelled out (``intl`` -> ``international``).

    Punctuation between words is dropped; runs of other characters (CJK) are kept as words.
    """
    words = []
    for token in _TOKEN.findall(text):
        token = token.strip("'")
        if not token or (not token[0].isalnum() and token != "&"):
            continue
        words.append(LATIN_WORDS.get(token, token))
    return words


def _strip_latin_legal_forms(text: str) -> tuple[str, list[str]]:
    """Drop trailing Latin legal-form words (``co ltd``, ``inc``) and a leading ``the``;
    spell out abbreviations (``intl`` -> ``international``). Returns (words, forms)."""
    words = [w for w in _WORD_SPLIT.split(text.replace("&", " and ")) if w]
    forms: list[str] = []
    changed = True
    while changed:
        changed = False
        for form in LATIN_LEGAL_FORMS:
            if len(words) > len(form) and tuple(words[-len(form) :]) == form:
                forms.insert(0, " ".join(form))
                words = words[: -len(form)]
                changed = True
                break
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(LATIN_WORDS.get(w, w) for w in words), forms


@dataclass(frozen=True)
class CompanyName:
    """A company name split into its parts; ``core`` is what matching compares."""

    core: str | None
    legal_form: str | None
    branch: str | None
    region: str | None


def _is_region(text: str) -> bool:
    bare = re.sub(r"(省|市)$", "", text)
    return bare in PROVINCES or bare in CITIES


def split_company_name(value: object) -> CompanyName:
    """Split a company name into region prefix, core name, legal-form suffix and branch.

    ``北京华信科技股份有限公司(上海分公司)`` -> region 北京, core 华信科技,
    legal form 股份有限公司, branch 上海分公司. ``(股份)`` inside the name is a legal form.
    """
    text = normalize_text(value)
    if text is None or text in NULLISH:  # N/A, NULL, 未知: no name, not a name all share
        return CompanyName(None, None, None, None)
    text = text.replace("(", "(").replace(")", ")")
    branches: list[str] = []
    forms: list[str] = []
    suffixes: list[str] = []
    regions: list[str] = []

    def _bracket(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        if inner in ("股份", "集团", "控股"):
            forms.append(inner)
        elif _is_region(inner):
            # 泰光(东莞)模具: a place in brackets is where the company is, not a branch.
            regions.append(re.sub(r"(省|市)$", "", inner))
        elif inner:
            branches.append(inner)
        return ""

    text = _BRACKETS.sub(_bracket, text)
    # Trailing branch without brackets: 某某公司上海分公司, 某某公司 北京办事处, 某某公司-北京分部.
    branch_tail = re.search(
        r"(公司|集团)[\s\-—_·]*([\u4e00-\u9fff]{1,10}(分公司|办事处|分部|分厂|营业部))$", text
    )
    if branch_tail:
        branches.append(branch_tail.group(2))
        text = text[: branch_tail.end(1)]
    if _LATIN.search(text):
        text, latin_forms = _strip_latin_legal_forms(text)
        suffixes.extend(latin_forms)
    text = strip_punctuation(text) or ""
    compact_forms = {form.replace(" ", "") for form in LEGAL_FORMS}
    changed = True
    # A name that is nothing but a legal form keeps it as its core.
    while changed and text and text not in compact_forms:
        changed = False
        for form in LEGAL_FORMS:
            compact = form.replace(" ", "")
            if text.endswith(compact) and len(text) > len(compact):
                suffixes.insert(0, form)
                text = text[: -len(compact)]
                changed = True
                break
    region = None
    match = _PROVINCE_SUFFIX.match(text)
    if match and len(text) > len(match.group(0)) + 1:
        region = match.group(1)
        text = text[len(match.group(0)) :]
        city = _CITY.match(text)
        if city and len(text) > len(city.group(0)) + 1:
            text = text[len(city.group(0)) :]
    else:
        city = _CITY.match(text)
        known = next((c for c in CITIES if text.startswith(c)), None)
        # A leading city name (深圳市… or 深圳…) is a region prefix when enough name remains.
        if known and len(text) > len(known) + 2:
            region = known
            text = text[len(known) :]
            if text.startswith("市") and len(text) > 2:
                text = text[1:]
        elif city and len(city.group(0)) <= 4 and len(text) > len(city.group(0)) + 1:
            region = city.group(1)[:-1]
            text = text[len(city.group(0)) :]
    if region is None and regions:
        region = regions[0]
    return CompanyName(
        core=text or None,
        legal_form="".join(forms + suffixes) or None,
        branch=";".join(branches) or None,
        region=region,
    )


def standardize_phone(value: object, region: str = "CN") -> str | None:
    """Phone number as E.164 (``+861012345678``), extension as ``;ext=123``; invalid -> None."""
    parsed = parse_phone(value, region)
    if parsed is None:
        return None
    number, extension = parsed
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"{e164};ext={extension}" if extension else e164


def parse_phone(
    value: object, region: str = "CN"
) -> tuple[phonenumbers.PhoneNumber, str | None] | None:
    """A valid phone number and its extension (``转123``, ``分机``, ``ext. 12``, ``x12``, or
    ``-123`` after a whole landline: ``010-65528899-123``); None when it is not one.

    For CN a landline whose exchange phonenumbers does not list yet counts as valid when
    its area code and length are right (:func:`unlisted_cn_landline`).
    """
    text = normalize_text(value)
    if text is None:
        return None
    extension = None
    match = _EXTENSION.search(text)
    if match:
        extension = match.group(2)
        text = text[: match.start()]
    number = _valid_number(text, region)
    if number is None and extension is None:
        dash = _DASH_EXTENSION.search(text)
        if dash:
            number = _valid_number(text[: dash.start()], region)
            extension = dash.group(1)
    return None if number is None else (number, extension)


def _valid_number(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    digits = re.sub(r"[^\d+]", "", text)
    if digits.startswith("0086"):
        digits = "+86" + digits[4:]
    try:
        number = phonenumbers.parse(digits, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_valid_number(number) or (
        region.upper() == "CN" and unlisted_cn_landline(number)
    ):
        return number
    return None


def unlisted_cn_landline(number: phonenumbers.PhoneNumber) -> bool:
    """True when only the first local digit keeps a CN landline from being valid.

    The area code and the length are then right (phonenumbers knows both); the local
    exchange is just not in its tables. Area codes are 2 digits (10, 2x) or 3 digits.
    """
    national = str(number.national_number)
    if number.country_code != 86 or (national.startswith("1") and not national.startswith("10")):
        return False
    area = 2 if national.startswith(("10", "2")) else 3
    for digit in "23456789":
        variant = phonenumbers.PhoneNumber(
            country_code=86, national_number=int(national[:area] + digit + national[area + 1 :])
        )
        if (
            phonenumbers.is_valid_number(variant)
            and phonenumbers.length_of_geographical_area_code(variant) == area
        ):
            return True
    return False


def standardize_email(value: object) -> str | None:
    """E-mail lower-cased and trimmed; not an address -> None."""
    text = normalize_text(value)
    if text is None:
        return None
    text = text.replace(" ", "").strip("<>.")
    return text if _EMAIL.match(text) else None


def standardize_uscc(value: object) -> str | None:
    """A valid 18-character unified social credit code (upper case), else None."""
    text = normalize_text(value)
    if text is None:
        return None
    code = re.sub(r"[\s\-]", "", text).upper()
    if not _USCC_SHAPE.match(code):
        return None
    try:
        return stdnum_uscc.validate(code)
    except Exception:  # stdnum raises its own ValidationError subclasses
        return None


@dataclass(frozen=True)
class Address:
    """An address with province and city split off the front where present."""

    province: str | None
    city: str | None
    rest: str | None


def split_address(value: object) -> Address:
    """``广东省深圳市福田区世纪大道424号`` -> (广东, 深圳, 福田区世纪大道424号)."""
    text = strip_punctuation(normalize_text(value))
    if text is None:
        return Address(None, None, None)
    text = text.replace("(", "").replace(")", "")
    # Floors are written 8层, 8楼, 8f or 8F: one spelling.
    text = re.sub(r"(\d+)(?:层|楼|f)", r"\1层", text)
    province = city = None
    match = _PROVINCE_SUFFIX.match(text)
    if match:
        province = match.group(1)
        text = text[len(match.group(0)) :]
        if province in MUNICIPALITIES:
            city = province
            text = re.sub(r"^市", "", text)
    found = _CITY.match(text)
    if found and city is None:
        city = found.group(1)[: -len(found.group(2))]
        text = text[len(found.group(0)) :]
    elif found and found.group(1)[: -len(found.group(2))] == city:
        text = text[len(found.group(0)) :]
    return Address(province, city, text or None)


def normalize_region(value: object) -> str | None:
    """Province or city name without its administrative suffix (广东省 -> 广东, 深圳市 -> 深圳)."""
    text = strip_punctuation(normalize_text(value))
    if text is None:
        return None
    match = _PROVINCE_SUFFIX.match(text)
    if match and match.group(0) == text:
        return match.group(1)
    return re.sub(r"(市|自治州|地区|盟)$", "", text) or None


def bigrams(text: str | None) -> list[str]:
    """Character bigrams of a string (a single character is its own gram); None -> empty."""
    if not isinstance(text, str) or not text:
        return []
    if len(text) == 1:
        return [text]
    return sorted({text[i : i + 2] for i in range(len(text) - 1)})


def _map_unique(values: pd.Series, function: Callable[[object], T]) -> list[T]:
    """``function`` applied to each distinct value once (exports repeat values a lot);
    anything but text counts as None."""
    return Memo(None, "", "", function).map(values.to_numpy(dtype=object))


def _fields_json(parts: CompanyName | Address) -> str:
    return json.dumps(astuple(parts), ensure_ascii=False)


def _from_json(kind: type[T]) -> Callable[[list[str | None]], list[T]]:
    """Results written by :func:`_fields_json`, parsed as one JSON array."""
    return lambda texts: [kind(*fields) for fields in json.loads(f"[{','.join(texts)}]")]


def customer_memos(engine: Engine | None, phone_region: str = "CN") -> dict[str, Memo]:
    """The slow parts of :func:`standardize_customers` (company names, USCCs, phones and
    addresses), remembered in the warehouse (``engine``) by column: the customer files
    change little between runs, so most values are looked up, not parsed again."""
    version = code_version(sys.modules[__name__], ["phonenumbers", "python-stdnum"])
    return {
        "customer_name": Memo(
            engine,
            "company_name",
            version,
            split_company_name,
            encode=_fields_json,
            decode=_from_json(CompanyName),
        ),
        "uscc": Memo(engine, "uscc", version, standardize_uscc),
        "phone": Memo(
            engine, f"phone {phone_region}", version, lambda v: standardize_phone(v, phone_region)
        ),
        "address": Memo(
            engine,
            "address",
            version,
            split_address,
            encode=_fields_json,
            decode=_from_json(Address),
        ),
    }


def standardize_customers(
    df: pd.DataFrame, phone_region: str = "CN", memos: dict[str, Memo] | None = None
) -> pd.DataFrame:
    """Add standardized matching columns to customer records; one row per source record.

    Reads ``customer_name, uscc, phone, email, address`` and optional ``province, city``;
    returns a copy with ``name_core, name_legal_form, name_branch, name_region, uscc_valid,
    phone_e164, phone_number (E.164 without extension), email_std, email_domain,
    address_std, province_std, city_std``. ``memos`` (:func:`customer_memos` of the same
    region) are used and added to; without them each distinct value is computed once.
    """
    out = df.copy()
    for column in ("customer_name", "uscc", "phone", "email", "address", "province", "city"):
        if column not in out.columns:
            out[column] = None
    memos = memos if memos is not None else customer_memos(None, phone_region)
    names = memos["customer_name"].map(out["customer_name"].to_numpy(dtype=object))
    out["name_core"] = [n.core for n in names]
    out["name_legal_form"] = [n.legal_form for n in names]
    out["name_branch"] = [n.branch for n in names]
    out["name_region"] = [n.region for n in names]
    out["uscc_valid"] = memos["uscc"].map(out["uscc"].to_numpy(dtype=object))
    phones = memos["phone"].map(out["phone"].to_numpy(dtype=object))
    out["phone_e164"] = phones
    out["phone_number"] = [p.split(";")[0] if isinstance(p, str) else None for p in phones]
    out["email_std"] = _map_unique(out["email"], standardize_email)
    out["email_domain"] = [
        e.split("@", 1)[1] if isinstance(e, str) else None for e in out["email_std"]
    ]
    addresses = memos["address"].map(out["address"].to_numpy(dtype=object))
    out["address_std"] = [a.rest for a in addresses]
    province = _map_unique(out["province"], normalize_region)
    city = _map_unique(out["city"], normalize_region)
    out["province_std"] = [p or a.province for p, a in zip(province, addresses, strict=True)]
    # City from the city column, else the address, else the company name's region prefix.
    out["city_std"] = [
        c
        or a.city
        or (n.region if n.region not in PROVINCES or n.region in MUNICIPALITIES else None)
        for c, a, n in zip(city, addresses, names, strict=True)
    ]
    return out


def _match_text(value: object) -> str | None:
    """Normalized text for matching: None for blanks and NULL-ish placeholders, length capped."""
    text = normalize_text(value)
    if text is None or text in NULLISH:
        return None
    return text[:MAX_MATCH_CHARS]


def standardize_person_name(value: object) -> str | None:
    """A person's name as one compact key: titles dropped, Latin words sorted.

    ``Dr. John Smith``, ``SMITH, John`` and ``john smith jr`` -> ``johnsmith``; CJK names
    keep their order (``张伟``).
    """
    text = _match_text(value)
    if text is None:
        return None
    if _LATIN.search(text):
        words = [w for w in _WORD_SPLIT.split(text) if w and w not in PERSON_TITLES]
        return "".join(sorted(words)) or None
    return strip_punctuation(text)


def phone_key(value: object) -> str | None:
    """A phone number for matching in any country: its national number, extension dropped.

    Region-free: with a country code (``+44 20 7946 0958``, ``0049 30 1234567``) the
    national significant number; without, the digits less one trunk ``0`` (``020 7946
    0958``) or the NANP ``1`` (``1-415-555-0100``); at most the last 10 digits, so
    ``+1 (415) 555-0100`` = ``415.555.0100``. Fewer than 6 digits is not a phone number.
    """
    text = _match_text(value)
    if text is None:
        return None
    match = _EXTENSION.search(text)
    if match:
        text = text[: match.start()]
    text = re.sub(r"\(0\)", "", text)  # +44 (0)20: the trunk 0 is not dialled from abroad
    digits = re.sub(r"[^\d+]", "", text)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    national = None
    if digits.startswith("+"):
        try:
            national = str(phonenumbers.parse(digits, None).national_number)
        except phonenumbers.NumberParseException:
            national = None
    if national is None:
        national = digits.lstrip("+")
        if national.startswith("0") or (len(national) == 11 and national.startswith("1")):
            national = national[1:]
    return national[-10:] if len(national) >= 6 else None


def standardize_any_address(value: object) -> str | None:
    """An address of any country as one compact string for matching.

    Latin-script addresses spell out or unify abbreviations word by word (``St.`` =
    ``Street``, ``N`` = ``North``); Chinese ones are tidied by :func:`split_address`.
    """
    text = _match_text(value)
    if text is None:
        return None
    if _LATIN.search(text) and not re.search(r"[\u4e00-\u9fff]", text):
        words = [LATIN_WORDS.get(w, w) for w in _WORD_SPLIT.split(text.replace("&", " and ")) if w]
        return "".join(words) or None
    parts = split_address(text)
    return "".join(p for p in (parts.province, parts.city, parts.rest) if p) or None


def standardize_date(value: object) -> str | None:
    """A date as ``YYYY-MM-DD`` (ISO, ``2024/1/2``, ``Jan 2 2024``, ``02.01.2024``…); else None.

    Slash dates with the day first (``31/12/2024``) are read day-first when the first number
    cannot be a month; otherwise month-first, as in US exports.
    """
    text = _match_text(value)
    if text is None:
        return None
    dayfirst = bool(re.match(r"^(1[3-9]|2\d|3[01])[/.\-]\d{1,2}[/.\-]\d{2,4}", text)) or bool(
        re.match(r"^\d{1,2}\.\d{1,2}\.\d{2,4}", text)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns when it guesses a format
            parsed = pd.to_datetime(text, errors="coerce", dayfirst=dayfirst)
    except (ValueError, OverflowError, TypeError):
        return None
    if pd.isna(parsed) or not 1800 <= parsed.year <= 2200:
        return None
    return parsed.strftime("%Y-%m-%d")


def standardize_identifier(value: object) -> str | None:
    """An identifier (tax number, registration code) upper-cased without spaces and dashes."""
    text = strip_punctuation(_match_text(value))
    return text.upper() if text else None


def standardize_free_text(value: object) -> str | None:
    """Free text as compact lower-case characters (punctuation and spaces dropped)."""
    return strip_punctuation(_match_text(value))


def map_unique(values: pd.Series, function: Callable[[object], T]) -> list[T]:
    """``function`` applied to each distinct value once (exports repeat values a lot)."""
    return _map_unique(values, function)
