"""High-volume demo tables, generated with numpy only (no loops over rows).

Every builder returns a *table*: a dict of equal-length numpy arrays keyed by raw
column name, holding integer codes (keys, references, vocabulary indexes),
``datetime64`` values (NaT = blank), floats (NaN = blank) or small-vocabulary
indexes. Columns starting with ``_`` are bookkeeping and are never written.
References to parent rows hold the parent's *base row index* until the parent
table has its keys (see ``pipeline.demo.defects``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.demo import vocab
from pipeline.demo.timeline import Timeline

Table = dict[str, np.ndarray]

HOUR = 3600
DAY = 86_400

ORDERS_PER_CUSTOMER = 25.0
LINES_PER_ORDER_EXTRA = 3.0  # lines per order = 1 + Poisson(3)
TICKETS_PER_CUSTOMER = 10.0
CONTACTS_LOGGED_PER_CUSTOMER = 8.0
VAT_RATE = 0.13

# payer classes: prompt, normal, slow, bad
PAYER_P = (0.55, 0.25, 0.12, 0.08)
_PAY_DELAY_LO = np.array([5.0, 20.0, 45.0, 80.0])
_PAY_DELAY_HI = np.array([40.0, 70.0, 110.0, 250.0])
_UNPAID_P = np.array([0.003, 0.01, 0.05, 0.35])
_PARTIAL_P = np.array([0.0, 0.01, 0.05, 0.2])
SPLIT_P = 0.06


def lifecycle(
    size: np.ndarray, scale: np.ndarray, tl: Timeline, rng: np.random.Generator
) -> pd.DataFrame:
    """One row per company: when it buys, churns or declines, how it pays, which systems see it.

    About 7% are prospects (never buy); 55% of buyers already buy when the history
    starts, the rest start during it; 12% of buyers churn, 8% decline sharply in the
    last three quarters; 78% of buyers (30% of prospects) use the service desk; 3%
    have a second record in sales.
    """
    n = len(size)
    last = tl.as_of_day
    is_prospect = rng.random(n) < 0.07
    existing = rng.random(n) < 0.55
    start_day = np.where(existing, 0, rng.integers(0, max(last - 7, 1), n))
    start_day = np.where(is_prospect, last + 1, start_day)
    churn = ~is_prospect & (rng.random(n) < 0.12) & (start_day < last - 200)
    churn_day = start_day + 120 + rng.random(n) * np.maximum(last - 30 - start_day - 120, 1)
    end_day = np.where(churn, churn_day.astype(np.int64), last)
    decline = ~is_prospect & ~churn & (rng.random(n) < 0.08) & (start_day < last - 365)
    decline_day = np.where(decline, rng.integers(last - 270, last - 60, n), last + 1)
    has_service = rng.random(n) < np.where(is_prospect, 0.30, 0.78)
    payer = rng.choice(4, size=n, p=PAYER_P)
    terms = np.where(
        scale <= 1,
        rng.choice([30, 60, 90], size=n, p=[0.3, 0.5, 0.2]),
        rng.choice([30, 45, 60], size=n, p=[0.6, 0.25, 0.15]),
    )
    created_day = np.where(
        existing & ~is_prospect,
        -rng.uniform(30, 2900, n),
        np.where(is_prospect, rng.uniform(-1000, last - 10, n), start_day - rng.uniform(0, 60, n)),
    )
    has_duplicate = (rng.random(n) < 0.03) & (created_day + 30 < last - 20)
    duplicate_created_day = np.where(
        has_duplicate,
        created_day + 30 + rng.random(n) * np.maximum(last - 20 - created_day - 30, 0),
        np.nan,
    )
    return pd.DataFrame(
        {
            "is_prospect": is_prospect,
            "start_day": start_day,
            "end_day": end_day,
            "decline_day": decline_day,
            "has_service": has_service,
            "payer": payer,
            "terms": terms,
            "created_day": np.floor(created_day),
            "duplicate_created_day": np.floor(duplicate_created_day),
        }
    )


def _poisson_counts(
    weight: np.ndarray,
    span: np.ndarray,
    per_entity: float,
    n_entities: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Poisson counts whose expected total is ``per_entity * n_entities``."""
    intensity = weight * span
    scale = per_entity * n_entities / max(intensity.sum(), 1e-9)
    return rng.poisson(intensity * scale)


def orders(
    life: pd.DataFrame,
    size: np.ndarray,
    primary_record: np.ndarray,
    duplicate_record: np.ndarray,
    tl: Timeline,
    rng: np.random.Generator,
) -> Table:
    """One row per real sales order (base rows, before defects).

    ``primary_record``/``duplicate_record`` give each company's sales record keys
    (-1 = none); some orders after a duplicate record was created book on it.
    """
    buyers = ~life["is_prospect"].to_numpy()
    start = life["start_day"].to_numpy()
    end = life["end_day"].to_numpy()
    span = np.where(buyers, end - start + 1, 0).astype(float)
    counts = _poisson_counts(
        size**0.35, span, ORDERS_PER_CUSTOMER * tl.rate_scale, int(buyers.sum()), rng
    )
    counts = np.where(buyers, np.maximum(counts, 1), 0)
    entity = np.repeat(np.arange(len(size)), counts)
    day = start[entity] + np.floor(rng.random(len(entity)) * span[entity]).astype(np.int64)
    declined = (day >= life["decline_day"].to_numpy()[entity]) & (rng.random(len(entity)) < 0.7)
    entity, day = entity[~declined], day[~declined]
    n = len(entity)
    on_duplicate = (
        (duplicate_record[entity] >= 0)
        & (day >= life["duplicate_created_day"].fillna(np.inf).to_numpy()[entity])
        & (rng.random(n) < 0.4)
    )
    recent = day >= tl.as_of_day - 30
    status = np.where(
        recent,
        rng.choice(3, size=n, p=[0.45, 0.05, 0.5]),
        rng.choice(2, size=n, p=[0.95, 0.05]),
    )
    seconds = day * DAY + rng.integers(8 * HOUR, 20 * HOUR, n)
    return {
        "cust_no": np.where(on_duplicate, duplicate_record[entity], primary_record[entity]),
        "order_date": tl.dates(day),
        "status": status,
        "created_time": tl.timestamps(seconds),
        "_entity": entity,
        "_day": day,
        "_sort": seconds,
    }


def products(rng: np.random.Generator) -> pd.DataFrame:
    """The product catalogue: one row per product (code, name, list price, cost ratio)."""
    rows = []
    for family, prefix in vocab.PRODUCT_FAMILIES:
        is_service = family in ("运维服务包", "软件许可", "数据采集软件")
        base = rng.lognormal(np.log(3000), 0.8)
        for model in range(5):
            rows.append(
                {
                    "product_code": f"{prefix}-{(model + 1) * 100}",
                    "product_name": f"{family} {prefix}{(model + 1) * 100}型",
                    "price": float(np.round(base * (1 + 0.6 * model), -1)),
                    "cost_ratio": float(
                        rng.uniform(0.35, 0.6) if is_service else rng.uniform(0.55, 0.85)
                    ),
                    "cost_unknown_p": 0.4 if is_service else 0.03,
                }
            )
    return pd.DataFrame(rows)


def order_lines(
    order_table: Table, size: np.ndarray, catalogue: pd.DataFrame, rng: np.random.Generator
) -> Table:
    """One row per real order line; ``order_no`` holds the order's base row index."""
    n_orders = len(order_table["_entity"])
    counts = 1 + rng.poisson(LINES_PER_ORDER_EXTRA, n_orders)
    order = np.repeat(np.arange(n_orders), counts)
    n = len(order)
    entity = order_table["_entity"][order]
    popularity = 1.0 / np.arange(1, len(catalogue) + 1) ** 0.8
    product = rng.permutation(len(catalogue))[
        rng.choice(len(catalogue), size=n, p=popularity / popularity.sum())
    ].astype(np.int16)
    qty = np.maximum(1, np.round(rng.lognormal(np.log(1.5 * size[entity] ** 0.6), 0.6))).astype(
        np.int64
    )
    price = catalogue["price"].to_numpy()[product]
    amount = np.round(qty * price * rng.uniform(0.85, 1.0, n), 2)
    ratio = catalogue["cost_ratio"].to_numpy()[product] * rng.uniform(0.95, 1.05, n)
    cost = np.round(amount * np.minimum(ratio, 0.97), 2)
    cost[rng.random(n) < catalogue["cost_unknown_p"].to_numpy()[product]] = np.nan
    line_in_order = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    return {
        "order_no": order,
        "product": product,
        "qty": qty,
        "amount": amount,
        "cost": cost,
        "_sort": line_in_order,
    }


def invoices(
    order_table: Table,
    order_total: np.ndarray,
    life: pd.DataFrame,
    tl: Timeline,
    rng: np.random.Generator,
) -> Table:
    """One row per real invoice: most completed orders are invoiced within 20 days.

    ``客户编号`` holds the company index until finance accounts exist.
    """
    completed = np.flatnonzero((order_table["status"] == 0) & (rng.random(len(order_total)) < 0.88))
    day = order_table["_day"][completed] + rng.integers(0, 21, len(completed))
    keep = day <= tl.as_of_day
    order, day = completed[keep], day[keep]
    entity = order_table["_entity"][order]
    return {
        "客户编号": entity,
        "开票日期": tl.dates(day),
        "到期日": tl.dates(day + life["terms"].to_numpy()[entity]),
        "金额(元)": np.round(order_total[order] * (1 + VAT_RATE), 2),
        "_entity": entity,
        "_day": day,
        "_sort": day * 10_000_000 + order % 10_000_000,
    }


def payments(
    invoice_table: Table, life: pd.DataFrame, tl: Timeline, rng: np.random.Generator
) -> Table:
    """One row per real payment; ``发票号`` holds the invoice's base row index.

    Payers pay by class (prompt / normal / slow / bad): delay, unpaid share, partial
    payments and split payments differ. Payments after as_of are not yet made, so
    their invoices stay open.
    """
    n = len(invoice_table["_entity"])
    payer = life["payer"].to_numpy()[invoice_table["_entity"]]
    amount = invoice_table["金额(元)"]
    unpaid = rng.random(n) < _UNPAID_P[payer]
    partial = ~unpaid & (rng.random(n) < _PARTIAL_P[payer])
    split = ~unpaid & ~partial & (rng.random(n) < SPLIT_P)
    delay = rng.uniform(_PAY_DELAY_LO[payer], _PAY_DELAY_HI[payer]).astype(np.int64)
    pay_day = invoice_table["_day"] + delay
    first_share = np.where(
        partial, rng.uniform(0.3, 0.8, n), np.where(split, rng.uniform(0.4, 0.7, n), 1.0)
    )
    first_amount = np.round(amount * first_share, 2)
    first_day = np.where(
        split, invoice_table["_day"] + (delay * rng.uniform(0.4, 0.8, n)).astype(np.int64), pay_day
    )
    paid = ~unpaid
    invoice = np.concatenate([np.flatnonzero(paid), np.flatnonzero(split)])
    day = np.concatenate([first_day[paid], pay_day[split]])
    value = np.concatenate([first_amount[paid], np.round(amount[split] - first_amount[split], 2)])
    made = day <= tl.as_of_day
    invoice, day, value = invoice[made], day[made], value[made]
    return {
        "发票号": invoice,
        "客户编号": invoice_table["客户编号"][invoice],
        "收款日期": tl.dates(day),
        "金额(元)": value,
        "_invoice_date": invoice_table["开票日期"][invoice],
        "_sort": day * 10_000_000 + invoice % 10_000_000,
    }


def tickets(
    life: pd.DataFrame,
    size: np.ndarray,
    account_of_entity: np.ndarray,
    n_entities: int,
    tl: Timeline,
    rng: np.random.Generator,
) -> Table:
    """One row per real service ticket, for companies with a service account.

    First response misses the 24 h SLA by channel (phone 6%, e-mail 20%, chat 10%,
    social 25%); hits stay under 23.5 h and misses over 24.5 h so that no answer
    sits on the boundary. Resolution times are log-normal; tickets still open at
    as_of have no response or no resolution yet.
    """
    served = account_of_entity >= 0
    prospect = life["is_prospect"].to_numpy()
    lo = np.where(prospect, 0, np.maximum(life["start_day"].to_numpy() - 60, 0))
    hi = np.where(prospect, tl.as_of_day, np.minimum(life["end_day"].to_numpy() + 90, tl.as_of_day))
    span = np.where(served, np.maximum(hi - lo + 1, 0), 0).astype(float)
    weight = size**0.3 * np.where(prospect, 0.3, 1.0)
    entity = np.repeat(
        np.arange(len(size)),
        _poisson_counts(weight, span, TICKETS_PER_CUSTOMER * tl.rate_scale, n_entities, rng),
    )
    n = len(entity)
    day = lo[entity] + np.floor(rng.random(n) * span[entity]).astype(np.int64)
    hour = np.where(rng.random(n) < 0.85, rng.uniform(8, 20, n), rng.uniform(0, 24, n))
    opened = day * DAY + (hour * HOUR).astype(np.int64)
    channel = rng.choice(4, size=n, p=vocab.CHANNEL_WEIGHTS)
    category = rng.choice(4, size=n, p=vocab.CATEGORY_WEIGHTS)
    touchpoint = rng.choice(5, size=n, p=vocab.TOUCHPOINT_WEIGHTS)
    complaint = category == vocab.CATEGORIES.index("服务质量投诉")
    miss = rng.random(n) < np.asarray(vocab.CHANNEL_SLA_MISS)[channel]
    fast = np.isin(channel, [0, 2])
    hit_hours = np.where(
        fast, rng.lognormal(np.log(0.4), 1.0, n), rng.lognormal(np.log(5.0), 0.8, n)
    )
    response_hours = np.where(miss, 24.5 + rng.exponential(28.0, n), np.clip(hit_hours, 0.02, 23.5))
    resolve_hours = (
        response_hours + 0.1 + rng.lognormal(np.log(20.0), 1.2, n) * np.where(complaint, 1.6, 1.0)
    )
    responded = opened + (response_hours * HOUR).astype(np.int64)
    resolved = opened + (resolve_hours * HOUR).astype(np.int64)
    no_response = responded > tl.end_second
    stuck = rng.random(n) < 0.015
    unresolved = no_response | (resolved > tl.end_second) | stuck
    closed = (tl.end_second - resolved > 14 * DAY) & (rng.random(n) < 0.8)
    status = np.select([no_response, unresolved, closed], [0, 1, 3], 2)
    subject = (category * 5 + touchpoint) * 5 + rng.integers(0, 5, n)
    return {
        "account_id": account_of_entity[entity],
        "opened_at": tl.timestamps(opened),
        "channel": channel,
        "category": category,
        "touchpoint": touchpoint,
        "first_response_at": np.where(no_response, np.datetime64("NaT"), tl.timestamps(responded)),
        "resolved_at": np.where(unresolved, np.datetime64("NaT"), tl.timestamps(resolved)),
        "status": status,
        "subject": subject,
        "_miss": miss,
        "_complaint": complaint,
        "_resolve_hours": resolve_hours,
        "_entity": entity,
        "_sort": opened,
    }


def subject_texts() -> np.ndarray:
    """Subject lines indexed by ``(category * 5 + touchpoint) * 5 + variant``."""
    texts = []
    for category in vocab.CATEGORIES:
        for touchpoint in vocab.TOUCHPOINTS:
            options = vocab.SUBJECTS[touchpoint]
            for variant in range(5):
                texts.append(
                    vocab.CATEGORY_SUBJECT_PREFIX[category] + options[variant % len(options)]
                )
    return np.array(texts, dtype=object)


def surveys(
    ticket_table: Table, account_of_entity: np.ndarray, tl: Timeline, rng: np.random.Generator
) -> Table:
    """One row per real survey answer: ~38% of resolved tickets, plus relationship surveys.

    CSAT and NPS fall with SLA misses, complaints and long resolutions.
    ``ticket_id`` holds the ticket's base row index (-1 = relationship survey).
    """
    resolved = ticket_table["resolved_at"]
    asked = np.flatnonzero(~np.isnat(resolved) & (rng.random(len(resolved)) < 0.38))
    answered = resolved[asked] + (rng.uniform(0.5, 72, len(asked)) * HOUR).astype("timedelta64[s]")
    keep = answered <= tl.timestamps(np.array([tl.end_second]))[0]
    asked, answered = asked[keep], answered[keep]
    latent = (
        4.3
        - 1.3 * ticket_table["_miss"][asked]
        - 0.5 * ticket_table["_complaint"][asked]
        - 0.4 * (ticket_table["_resolve_hours"][asked] > 72)
    )
    served = np.flatnonzero(account_of_entity >= 0)
    n_relationship = int(len(asked) * 0.05)
    relationship_entity = (
        served[rng.integers(0, len(served), n_relationship)] if len(served) else served
    )
    relationship_at = tl.timestamps(rng.integers(0, tl.end_second, n_relationship))
    n = len(asked) + n_relationship
    latent = np.concatenate([latent, np.full(n_relationship, 4.0)]) + rng.normal(0, 0.8, n)
    csat = np.clip(np.round(latent), 1, 5).astype(np.int64)
    nps = np.clip(np.round(2.2 * csat - 1.0 + rng.normal(0, 1.2, n)), 0, 10).astype(np.int64)
    good = len(vocab.SURVEY_COMMENTS_GOOD)
    comment = np.where(
        csat >= 4,
        rng.integers(0, good, n),
        good + rng.integers(0, len(vocab.SURVEY_COMMENTS_BAD), n),
    )
    answered_at = np.concatenate([answered, relationship_at])
    return {
        "ticket_id": np.concatenate([asked, np.full(n_relationship, -1)]),
        "account_id": np.concatenate(
            [ticket_table["account_id"][asked], account_of_entity[relationship_entity]]
        ),
        "answered_at": answered_at,
        "csat": csat,
        "nps": nps,
        "comment": comment,
        "_sort": (answered_at - np.datetime64(tl.start, "s")).astype(np.int64),
    }


def contact_log(
    life: pd.DataFrame,
    size: np.ndarray,
    account_of_entity: np.ndarray,
    manager_of_entity: np.ndarray,
    n_staff: int,
    n_entities: int,
    tl: Timeline,
    rng: np.random.Generator,
) -> Table:
    """One row per real contact with a customer (letter, call, meeting, visit).

    ``staff`` indexes the staff pool (account managers first); ``summary`` indexes
    the summary texts, -1 = blank (``contact_report_missing``, about 2%).
    """
    served = account_of_entity >= 0
    lo = np.clip(life["created_day"].to_numpy(), 0, tl.as_of_day)
    hi = np.minimum(life["end_day"].to_numpy() + 180, tl.as_of_day)
    hi = np.where(life["is_prospect"].to_numpy(), tl.as_of_day, hi)
    span = np.where(served, np.maximum(hi - lo + 1, 0), 0).astype(float)
    counts = _poisson_counts(
        size**0.2, span, CONTACTS_LOGGED_PER_CUSTOMER * tl.rate_scale, n_entities, rng
    )
    entity = np.repeat(np.arange(len(size)), counts)
    n = len(entity)
    day = lo[entity].astype(np.int64) + np.floor(rng.random(n) * span[entity]).astype(np.int64)
    seconds = day * DAY + rng.integers(8 * HOUR, 19 * HOUR, n)
    own_manager = (rng.random(n) < 0.7) & (manager_of_entity[entity] >= 0)
    staff = np.where(own_manager, manager_of_entity[entity], rng.integers(0, n_staff, n))
    summary = rng.integers(0, len(vocab.CONTACT_SUMMARIES), n)
    summary[rng.random(n) < 0.02] = -1
    return {
        "account_id": account_of_entity[entity],
        "contact_time": tl.timestamps(seconds),
        "contact_type": rng.choice(4, size=n, p=vocab.CONTACT_TYPE_WEIGHTS),
        "staff": staff,
        "summary": summary,
        "_sort": seconds,
    }
