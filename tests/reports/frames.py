"""Hand-built warehouse frames for report tests (the contract of mart_metrics & co.)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.quarters import Quarter

QUARTER = Quarter(2026, 3)
SEGMENTS = {
    "overall": ["all"],
    "tier": ["A", "B", "C"],
    "region": ["华北", "华东", "华南"],
    "industry": ["制造业", "信息技术", "批发零售"],
    "channel": ["phone", "email", "online_chat", "social"],
    "category": [
        "service_quality_suggestion",
        "service_need_suggestion",
        "service_quality_complaint",
    ],
    "touchpoint": ["presales", "delivery", "repair", "billing"],
}
BASE = {
    "csat_top2_share": 0.78,
    "csat_mean": 4.05,
    "nps": 21.0,
    "first_response_sla_share": 0.86,
    "resolution_median_hours": 30.0,
    "resolution_p90_hours": 96.0,
    "complaint_count": 120.0,
    "retention_rate": 0.91,
    "churned_customers": 7.0,
}


def metrics_frame(quarters: int = 8, quarter: Quarter = QUARTER) -> pd.DataFrame:
    """mart_metrics, long form: quarter x metric x dimension x segment."""
    rng = np.random.default_rng(3)
    rows = []
    for back in range(quarters - 1, -1, -1):
        q = quarter.shift(-back)
        for metric, base in BASE.items():
            for dimension, segments in SEGMENTS.items():
                if dimension in ("channel",) and metric != "first_response_sla_share":
                    continue
                if dimension in ("category", "touchpoint") and metric != "complaint_count":
                    continue
                for segment in segments:
                    wobble = 1 + 0.02 * (quarters - back) * (0.5 - rng.random())
                    value = base * wobble
                    if metric.endswith("share") or metric == "retention_rate":
                        value = min(value, 0.99)
                    rows.append(
                        (str(q), metric, dimension, segment, value, int(rng.integers(10, 400)))
                    )
    df = pd.DataFrame(rows, columns=["quarter", "metric", "dimension", "segment", "value", "n"])
    df = df.sort_values(["metric", "dimension", "segment", "quarter"])
    df["previous_value"] = df.groupby(["metric", "dimension", "segment"])["value"].shift(1)
    df["change"] = df["value"] - df["previous_value"]
    df["is_small_group"] = df["n"] < 30
    return df.reset_index(drop=True)


def customer_quarter_frame(customers: int = 60, quarter: Quarter = QUARTER) -> pd.DataFrame:
    """mart_customer_quarter for the quarter and the one before (one row per customer x quarter)."""
    rows = []
    tiers = ["A", "B", "C", None]
    for q, shift in ((quarter.previous(), 0), (quarter, 1)):
        for i in range(customers):
            tier = tiers[(i + (shift if i % 7 == 0 else 0)) % 4]
            rows.append(
                {
                    "quarter": str(q),
                    "customer_id": f"C{i:05d}",
                    "value_tier": tier,
                    "credit_grade": "ABCD"[(i + (shift if i % 11 == 0 else 0)) % 4],
                    "lifecycle_stage": ["new", "loyal", "at_risk", "churned"][i % 4],
                    "is_overdue_risk": i % 9 == 0,
                    "is_credit_drop": i % 11 == 0,
                    "is_big_customer": i < 3,
                    "is_risk_customer": i % 9 == 0,
                    "region": "华东",
                    "industry": "制造业",
                    "account_manager": ["王芳", "李强", "张伟"][i % 3],
                }
            )
    return pd.DataFrame(rows)


def customers_frame(customers: int = 60) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(customers)],
            "name": [f"上海示例{i}号机械制造有限公司" for i in range(customers)],
            "uscc": ["91310000MA1FL0000X"] * customers,
            "account_manager": [["王芳", "李强", "张伟"][i % 3] for i in range(customers)],
        }
    )


def findings_frame(n: int = 40, quarter: Quarter = QUARTER) -> pd.DataFrame:
    codes = [
        "missing_uscc",
        "invalid_phone",
        "stale_file",
        "missing_key_contact",
        "invalid_uscc_checksum",
    ]
    severities = ["error", "warning", "info"]
    return pd.DataFrame(
        {
            "quarter": str(quarter),
            "customer_record_id": [f"C{i % 60:05d}" for i in range(n)],
            "source_system": "sales",
            "dataset": "sales_customers",
            "source_record_id": [f"S-{i:08d}-LONGIDENTIFIERWITHOUTSPACES{i}" for i in range(n)],
            "field": ["phone" if i % 5 == 1 else "uscc" for i in range(n)],
            "code": [codes[i % len(codes)] for i in range(n)],
            "severity": [severities[i % 3] for i in range(n)],
            "detail": [
                f"联系人电话 138 1234 {i:04d} 格式错误" if i % 5 == 1 else "统一社会信用代码缺失"
                for i in range(n)
            ],
            "account_manager": [["王芳", "李强", None][i % 3] for i in range(n)],
        }
    )


def review_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "left_customer_id": ["C00001", "C00002"],
            "right_customer_id": ["C00031", "C00032"],
            "match_probability": [0.72, 0.64],
            "evidence": ["名称相似 0.93; 电话 010-1234 5678 相同", "USCC 相同; 地址不同"],
        }
    )


def events_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event": ["merge"],
            "customer_id": ["C00004"],
            "merged_record_ids": ["sales:S1, service:V9, finance:F3"],
            "evidence": ["USCC 一致; 名称规范化后一致 <b>x</b>"],
        }
    )


def quarantine_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": ["service_surveys"] * 3 + ["finance_invoices"],
            "reason": ["csat_out_of_range"] * 3 + ["bad_date"],
        }
    )
