"""Matplotlib charts as SVG data URIs (glyphs drawn as paths, so no font is needed at PDF time).

Every function takes plain lists of labels and numbers (already computed by the context
builder) and returns a ``data:image/svg+xml;base64,...`` string for an ``<img src>``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import font_manager

PALETTE = ["#1f4e79", "#2e86c1", "#85c1e9", "#f39c12", "#c0392b", "#7f8c8d", "#27ae60"]
_CJK_FAMILIES = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC"]


def _font_family() -> list[str]:
    available = {f.name for f in font_manager.fontManager.ttflist}
    return [name for name in _CJK_FAMILIES if name in available] + ["DejaVu Sans"]


def _style() -> dict:
    return {
        "font.family": _font_family(),
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#888888",
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "svg.fonttype": "path",
        "svg.hashsalt": "crm-pipeline",  # stable ids: same data, same bytes
        "axes.unicode_minus": False,
    }


def _to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def line_chart(
    labels: Sequence[str], series: dict[str, Sequence[float | None]], title: str, unit: str = ""
) -> str:
    """One line per series over ``labels`` (quarters); None values leave gaps."""
    with plt.rc_context(_style()):
        fig, ax = plt.subplots(figsize=(6.4, 2.6))
        xs = range(len(labels))  # every quarter keeps its place, with data or not
        for i, (name, values) in enumerate(series.items()):
            ys = [float("nan") if v is None else v for v in values]
            ax.plot(xs, ys, marker="o", color=PALETTE[i % len(PALETTE)], label=name, lw=1.8)
        ax.set_xticks(list(xs), list(labels))
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_title(title, loc="left")
        if unit:
            ax.set_ylabel(unit)
        ax.grid(axis="y", color="#e5e5e5")
        if len(series) > 1:
            ax.legend(frameon=False, fontsize=8, ncol=min(len(series), 4))
        return _to_data_uri(fig)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    unit: str = "",
    reference: float | None = None,
    horizontal: bool = False,
    fmt: str = "%.1f",
) -> str:
    """Bars with value labels (``fmt``: ``"%d"`` for counts); an optional dashed reference line
    (e.g. an SLA target)."""
    with plt.rc_context(_style()):
        fig, ax = plt.subplots(
            figsize=(6.4, max(2.2, 0.35 * len(labels) + 1) if horizontal else 2.6)
        )
        if horizontal:
            bars = ax.barh(list(labels), list(values), color=PALETTE[1])
            ax.invert_yaxis()
        else:
            bars = ax.bar(list(labels), list(values), color=PALETTE[1])
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=2)
        if reference is not None:
            (ax.axvline if horizontal else ax.axhline)(reference, color=PALETTE[4], ls="--", lw=1)
        ax.set_title(title, loc="left")
        if unit:
            (ax.set_xlabel if horizontal else ax.set_ylabel)(unit)
        return _to_data_uri(fig)


def stacked_share_chart(
    labels: Sequence[str], stacks: dict[str, Sequence[float]], title: str
) -> str:
    """Horizontal 100%-stacked bars: one bar per label, one segment per stack key."""
    with plt.rc_context(_style()):
        fig, ax = plt.subplots(figsize=(6.4, max(1.8, 0.4 * len(labels) + 1)))
        left = [0.0] * len(labels)
        for i, (name, values) in enumerate(stacks.items()):
            ax.barh(
                list(labels), list(values), left=left, color=PALETTE[i % len(PALETTE)], label=name
            )
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlim(0, 100)
        ax.set_xlabel("%")
        ax.invert_yaxis()
        ax.set_title(title, loc="left")
        ax.legend(
            frameon=False,
            fontsize=8,
            ncol=min(len(stacks), 5),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.35),
        )
        return _to_data_uri(fig)
