"""Small text builders for the demo generator: widths, USCCs, phones, e-mails, names.

Every function works on one value and takes the random generator explicitly, so the
per-customer loops that call them stay deterministic for a given seed. Nothing here
runs per order line, ticket or invoice.
"""

from __future__ import annotations

import numpy as np

from pipeline.demo import vocab

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

_TO_FULL = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}
_TO_HALF = {c + 0xFEE0: c for c in range(0x21, 0x7F)}

MOBILE_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "176",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "198",
    "199",
)

_SURNAME_KEYS = tuple(vocab.SURNAMES)
_SURNAME_CDF = np.cumsum(vocab.SURNAME_WEIGHTS) / sum(vocab.SURNAME_WEIGHTS)
_GIVEN_KEYS = tuple(vocab.GIVEN_CHARS)


def to_full_width(text: str) -> str:
    """Write ASCII letters, digits and brackets in their full-width forms (Ｂ, （）)."""
    return text.translate(_TO_FULL)


def to_half_width(text: str) -> str:
    """Write full-width ASCII forms (Ｂ, （）) as plain half-width characters."""
    return text.translate(_TO_HALF)


def uscc_check_char(first17: str) -> str:
    """Check character of a unified social credit code (GB 32100-2015, mod 31)."""
    total = sum(USCC_ALPHABET.index(ch) * w for ch, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def make_uscc(region6: str, rng: np.random.Generator) -> str:
    """A valid USCC for an enterprise (9 1) registered in ``region6``.

    The embedded organisation code carries its own GB 11714 check digit, as real
    codes do.
    """
    org = "".join(str(d) for d in rng.integers(0, 10, 8))
    total = sum(int(d) * w for d, w in zip(org, _ORG_CODE_WEIGHTS, strict=True))
    org_check = 11 - total % 11
    org_check_char = {10: "X", 11: "0"}.get(org_check, str(org_check))
    first17 = f"91{region6}{org}{org_check_char}"
    return first17 + uscc_check_char(first17)


def mistype_uscc(code: str, rng: np.random.Generator) -> str:
    """The code as someone mistyped it: one character changed or one dropped.

    A single substitution always breaks the mod-31 check, so the result is invalid.
    """
    if rng.random() < 0.2:
        pos = int(rng.integers(0, 18))
        return code[:pos] + code[pos + 1 :]
    pos = int(rng.integers(2, 18))
    options = [ch for ch in "0123456789" if ch != code[pos]]
    if pos >= 8 and rng.random() < 0.3:
        options = ["O", "I"]  # letters that look like digits and are not in the alphabet
    return code[:pos] + str(rng.choice(options)) + code[pos + 1 :]


def landline_local(length: int, rng: np.random.Generator) -> str:
    """A local landline number of ``length`` digits (first digit 2-8)."""
    return str(rng.integers(2, 9)) + "".join(str(d) for d in rng.integers(0, 10, length - 1))


def mobile_number(rng: np.random.Generator) -> str:
    """An 11-digit mainland mobile number."""
    prefix = MOBILE_PREFIXES[int(rng.integers(0, len(MOBILE_PREFIXES)))]
    return prefix + "".join(str(d) for d in rng.integers(0, 10, 8))


def format_landline(area: str, local: str, style: int, extension: str = "") -> str:
    """One of the ways people write a landline; ``style`` picks the way (0-6)."""
    split = f"{local[:-4]} {local[-4:]}"
    text = (
        f"{area}-{local}",
        f"{area}-{split}",
        f"+86 {area[1:]} {local}",
        f"{area}{local}",
        f"({area}){local}",
        f"（{area}）{split}",
        f"{area} {local}",
    )[style % 7]
    return f"{text}转{extension}" if extension else text


def format_mobile(number: str, style: int) -> str:
    """One of the ways people write a mobile number; ``style`` picks the way (0-4)."""
    return (
        number,
        f"{number[:3]} {number[3:7]} {number[7:]}",
        f"{number[:3]}-{number[3:7]}-{number[7:]}",
        f"+86 {number[:3]} {number[3:7]} {number[7:]}",
        f"+86{number}",
    )[style % 5]


def break_phone(phone: str, rng: np.random.Generator) -> str:
    """An invalid version of a phone: digits missing, letters typed, or a digit too many."""
    digit_positions = [i for i, ch in enumerate(phone) if ch.isdigit()]
    how = int(rng.integers(0, 3))
    if how == 0:  # too few digits
        drop = set(rng.choice(digit_positions[-6:], size=2, replace=False).tolist())
        return "".join(ch for i, ch in enumerate(phone) if i not in drop)
    if how == 1:  # letters typed instead of digits
        pos = int(rng.choice(digit_positions[-5:]))
        return phone[:pos] + str(rng.choice(["O", "l", "x", "未知"])) + phone[pos + 1 :]
    pos = int(rng.choice(digit_positions[-4:]))  # a digit too many
    return phone[:pos] + phone[pos] + phone[pos:]


def break_email(email: str, rng: np.random.Generator) -> str:
    """An invalid version of an e-mail address (no @, two @, no dot in the domain, a space)."""
    local, domain = email.split("@", 1)
    how = int(rng.integers(0, 4))
    if how == 0:
        return f"{local}#{domain}"
    if how == 1:
        return f"{local}@@{domain}"
    if how == 2:
        return f"{local}@{domain.split('.', 1)[0]}"
    return f"{local[:2]} {local[2:]}@{domain}" if len(local) > 2 else f"{local} @{domain}"


def person_name(rng: np.random.Generator) -> tuple[str, str]:
    """A Chinese person name and its pinyin (surname first), e.g. ("王伟", "wangwei")."""
    pick = int(np.searchsorted(_SURNAME_CDF, rng.random(), side="right"))
    surname = _SURNAME_KEYS[min(pick, len(_SURNAME_KEYS) - 1)]
    given = [
        _GIVEN_KEYS[int(i)] for i in rng.integers(0, len(_GIVEN_KEYS), 1 + (rng.random() < 0.7))
    ]
    pinyin = vocab.SURNAMES[surname] + "".join(vocab.GIVEN_CHARS[g] for g in given)
    return surname + "".join(given), pinyin


def person_email(pinyin: str, domain: str, rng: np.random.Generator) -> str:
    """A work or private e-mail for a person."""
    if rng.random() < 0.2:
        return f"{pinyin}{int(rng.integers(1, 999))}@{vocab.FREE_MAIL[int(rng.integers(0, 4))]}"
    return f"{pinyin}@{domain}"
