"""One test per standardization rule of pipeline.transform.standardize."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.transform.standardize import (
    NULLISH,
    bigrams,
    is_nullish,
    normalize_text,
    phone_key,
    placeholders,
    split_address,
    split_company_name,
    standardize_any_address,
    standardize_customers,
    standardize_date,
    standardize_email,
    standardize_person_name,
    standardize_phone,
    standardize_uscc,
)


def test_nfkc_turns_full_width_into_half_width_and_collapses_space() -> None:
    assert normalize_text("ＡＢＣ　科技\t 有限公司 ") == "abc 科技 有限公司"
    assert normalize_text("   ") is None
    assert normalize_text(None) is None
    assert normalize_text(float("nan")) is None


@pytest.mark.parametrize(
    ("raw", "core", "legal_form"),
    [
        ("华信科技有限公司", "华信科技", "有限公司"),
        ("华信科技有限责任公司", "华信科技", "有限责任公司"),
        ("华信科技股份有限公司", "华信科技", "股份有限公司"),
        ("华信科技(股份)有限公司", "华信科技", "股份有限公司"),
        ("华信科技集团有限公司", "华信科技", "集团有限公司"),
        ("华信科技集团", "华信科技", "集团"),
        ("ＨＸ Tech Co., Ltd.", "hxtechnology", "co ltd"),
        ("The Acme Intl. Corp.", "acmeinternational", "corp"),
        ("Texaco Limited", "texaco", "limited"),
        ("Smith & Sons L.L.C.", "smithandsons", "l l c"),
    ],
)
def test_legal_form_suffix_is_split_from_core_name(raw: str, core: str, legal_form: str) -> None:
    name = split_company_name(raw)
    assert (name.core, name.legal_form) == (core, legal_form)


def test_branch_in_brackets_full_or_half_width_is_kept_apart() -> None:
    for raw in ("华信科技有限公司(上海分公司)", "华信科技有限公司（上海分公司）"):
        name = split_company_name(raw)
        assert name.core == "华信科技"
        assert name.branch == "上海分公司"


@pytest.mark.parametrize(
    "raw",
    [
        "华信科技有限公司【上海分公司】",
        "华信科技有限公司〔上海分公司〕",
        "华信科技有限公司 上海分公司",
        "华信科技有限公司-上海分公司",
        "华信科技有限公司—上海分公司",
    ],
)
def test_branch_in_cjk_brackets_or_after_a_separator_is_kept_apart(raw: str) -> None:
    name = split_company_name(raw)
    assert (name.core, name.legal_form, name.branch) == ("华信科技", "有限公司", "上海分公司")


@pytest.mark.parametrize("raw", ["N/A", "NULL", "未知", "暂无", "none", "-", "  "])
def test_placeholder_company_name_is_no_name(raw: str) -> None:
    assert split_company_name(raw).core is None


def test_region_prefix_is_split_from_core_name() -> None:
    assert split_company_name("北京市华信科技有限公司").region == "北京"
    assert split_company_name("北京市华信科技有限公司").core == "华信科技"
    assert split_company_name("深圳华信科技有限公司").core == "华信科技"
    assert split_company_name("广东省华信科技有限公司").region == "广东"
    # A name that is only a legal form keeps something to compare.
    assert split_company_name("有限公司").core == "有限公司"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("010-1234 5678", "+861012345678"),
        ("+86 10 12345678", "+861012345678"),
        ("(010)12345678", "+861012345678"),
        ("0086 10 1234 5678", "+861012345678"),
        ("13812345678", "+8613812345678"),
        ("+86 138-1234-5678", "+8613812345678"),
        ("(0755)8888 6666转123", "+8675588886666;ext=123"),
        ("０１０－１２３４５６７８", "+861012345678"),
        # An extension after a dash, once the digits before it are a whole landline.
        ("010-65528899-123", "+861065528899;ext=123"),
        ("0755-2699 1234-8001", "+8675526991234;ext=8001"),
        ("+86 10 6552 8899-8", "+861065528899;ext=8"),
        ("0755-2699-1234", "+8675526991234"),
    ],
)
def test_phone_numbers_become_e164(raw: str, e164: str) -> None:
    assert standardize_phone(raw) == e164


def test_phone_validation_accepts_is_kept_for_matching() -> None:
    # Shanghai 021-8000 xxxx: phonenumbers does not list the exchange, validation accepts
    # the number (right area code and length), so resolution must not drop it.
    from pipeline.validation.findings import is_valid_phone

    for raw, e164 in (
        ("021-8000 1234", "+862180001234"),
        ("+86 21 80001234转5", "+862180001234;ext=5"),
    ):
        assert is_valid_phone(raw)
        assert standardize_phone(raw) == e164
    assert not is_valid_phone("021-8000 123") and standardize_phone("021-8000 123") is None
    # A dash extension counts only after a whole number: 010-6552-889 is a digit short.
    assert is_valid_phone("010-65528899-123")
    assert not is_valid_phone("010-6552-889") and standardize_phone("010-6552-889") is None


@pytest.mark.parametrize("raw", ["123", "not a phone", "", None, "+86 999"])
def test_invalid_phone_numbers_are_blank(raw: str | None) -> None:
    assert standardize_phone(raw) is None


def test_email_is_lower_cased_and_checked() -> None:
    assert standardize_email(" Sales@HuaXin.COM ") == "sales@huaxin.com"
    assert standardize_email("ｓａｌｅｓ＠ｈｘ．ｃｎ") == "sales@hx.cn"
    assert standardize_email("sales at huaxin") is None


def test_uscc_is_validated_with_its_check_character() -> None:
    valid = "911201020281902993"
    assert standardize_uscc(valid) == valid
    assert standardize_uscc(" 9112-0102 0281902993") == valid
    # One changed digit breaks the check character.
    assert standardize_uscc("911201020281902994") is None
    assert standardize_uscc("12345") is None
    assert standardize_uscc(None) is None


def test_invisible_characters_pasted_into_values_are_deleted() -> None:
    # A USCC or a name copied from a web page or chat often carries zero-width spaces, a
    # BOM or a soft hyphen: the value shown is the value matched.
    valid = "911201020281902993"
    assert standardize_uscc("\ufeff9112010202\u200b81902993\u2060") == valid
    assert split_company_name("华信\u200d科技有限公司") == split_company_name("华信科技有限公司")
    assert normalize_text("\u200b\u00ad") is None


def test_address_is_split_into_province_city_and_rest() -> None:
    address = split_address("广东省深圳市福田区世纪大道424号")
    assert (address.province, address.city, address.rest) == ("广东", "深圳", "福田区世纪大道424号")
    municipal = split_address("北京市朝阳区建国路1号")
    assert (municipal.province, municipal.city, municipal.rest) == (
        "北京",
        "北京",
        "朝阳区建国路1号",
    )
    bare = split_address("福田区世纪大道424号")
    assert (bare.province, bare.city) == (None, None)


def test_bigrams_count_characters_not_bytes() -> None:
    assert bigrams("华信科技") == sorted(["华信", "信科", "科技"])
    assert bigrams("华") == ["华"]
    assert bigrams(None) == []


def test_standardize_customers_adds_columns_and_leaves_input_untouched() -> None:
    df = pd.DataFrame(
        {
            "customer_name": ["北京华信科技股份有限公司(上海分公司)"],
            "uscc": ["911201020281902993"],
            "phone": ["010-1234 5678"],
            "email": ["A@B.CN"],
            "address": ["北京市朝阳区建国路1号"],
        }
    )
    before = df.copy()
    out = standardize_customers(df)
    pd.testing.assert_frame_equal(df, before)
    row = out.iloc[0]
    assert row["name_core"] == "华信科技"
    assert row["name_branch"] == "上海分公司"
    assert row["uscc_valid"] == "911201020281902993"
    assert row["phone_number"] == "+861012345678"
    assert row["email_domain"] == "b.cn"
    assert (row["province_std"], row["city_std"]) == ("北京", "北京")


def test_place_in_brackets_is_a_region_not_a_branch() -> None:
    name = split_company_name("泰光（东莞）模具有限公司")
    assert (name.core, name.region, name.branch) == ("泰光模具", "东莞", None)


def test_floor_spellings_are_unified_in_addresses() -> None:
    spellings = ["财富中心4层", "财富中心4楼", "财富中心4F", "财富中心４ｆ"]
    assert {split_address(s).rest for s in spellings} == {"财富中心4层"}


def test_city_falls_back_to_the_region_prefix_of_the_name() -> None:
    out = standardize_customers(pd.DataFrame({"customer_name": ["东莞泰光模具有限公司"]}))
    assert out.loc[0, "city_std"] == "东莞"


@pytest.mark.parametrize(
    "same",
    [
        ("+1 (415) 555-0100", "415.555.0100", "1-415-555-0100"),
        ("+44 20 7946 0958", "020 7946 0958", "+44 (0)20 7946 0958"),
        ("+49 30 1234567", "030 1234567", "0049 30 1234567"),
        ("13812345678", "+86 138 1234 5678", "0086-138-1234-5678"),
        ("010-12345678 转 123", "+86 10 12345678", "(010)12345678"),
    ],
)
def test_phone_key_is_region_free(same: tuple[str, ...]) -> None:
    keys = {phone_key(v) for v in same}
    assert len(keys) == 1 and None not in keys
    assert phone_key("12345") is None and phone_key("N/A") is None


def test_person_name_ignores_order_titles_and_case() -> None:
    for raw in ("Dr. John Smith", "SMITH, John", "john smith jr"):
        assert standardize_person_name(raw) == "johnsmith"
    assert standardize_person_name("张伟") == "张伟"
    assert standardize_person_name("NULL") is None


def test_any_address_unifies_latin_abbreviations() -> None:
    assert standardize_any_address("123 N. Main St., Ste 4") == standardize_any_address(
        "123 North Main Street Suite 4"
    )
    assert (
        standardize_any_address("广东省深圳市福田区世纪大道424号") == "广东深圳福田区世纪大道424号"
    )


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2024-01-02", "2024-01-02"),
        ("2024/1/2", "2024-01-02"),
        ("01/02/2024", "2024-01-02"),
        ("31/12/2024", "2024-12-31"),
        ("02.01.2024", "2024-01-02"),
        ("Jan 2, 2024", "2024-01-02"),
        ("0000-00-00", None),
        ("not a date", None),
        ("N/A", None),
    ],
)
def test_dates_of_many_spellings_become_iso(raw: str, iso: str | None) -> None:
    assert standardize_date(raw) == iso


def test_nullish_placeholders_are_missing() -> None:
    for value in ("NULL", " n/a ", "-", "None", "未知", "", None):
        assert is_nullish(value)
    assert not is_nullish("Acme")


def test_placeholders_among_many_values_are_the_ones_is_nullish_finds() -> None:
    """The Arrow shortcut finds exactly what normalizing every value would."""
    padded = [
        "\u3000Ｎ／Ａ\u3000",
        "\u200bnull\u200b",
        "\xa0-\xa0",
        "NULL" + " " * 80,
        "未\u00ad知",
    ]
    padded += ["not\u2028available", "NOT  AVAILABLE", "\u3000无\u3000"]
    others = ["上海华信科技有限公司", "张三", "Acme", "--x", "unknown?", "—", None, "  "]
    values = pd.Series([*NULLISH, *(v.upper() for v in NULLISH), *padded, *others], dtype=object)
    expected = {v for v in values.dropna() if is_nullish(v)}
    assert placeholders(values) == expected
    assert {"\u3000Ｎ／Ａ\u3000", "NULL" + " " * 80} <= expected
    assert not {"Acme", "张三"} & expected
