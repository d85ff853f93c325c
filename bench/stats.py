"""Percentiles (nearest rank, as `streamtap stats` computes them) and number formatting."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values; NaN when there are none."""
    n = len(sorted_values)
    if not n:
        return math.nan
    rank = max(1, math.ceil(p / 100 * n))
    return sorted_values[min(rank, n) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "n": float(len(s)),
        "p50": pct(s, 50),
        "p99": pct(s, 99),
        "p99.9": pct(s, 99.9),
        "max": s[-1] if s else math.nan,
    }


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("✅" if ok else "❌")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
