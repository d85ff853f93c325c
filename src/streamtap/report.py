"""Plain-text rendering of read-side results for the terminal."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def _pcts(d: dict[str, Any] | None) -> list[str]:
    d = d or {}
    return [_fmt(d.get(k)) for k in ("p50", "p90", "p99")]


def format_stats(stats: dict[str, Any]) -> str:
    """The `streamtap stats` table: overall, per model, finish reasons and outcomes."""
    if not stats.get("count"):
        return "no streams recorded yet"
    head = ["model", "streams", "ttft p50", "p90", "p99", "gap p50", "p90", "p99", "dur p50", "p90", "p99"]
    rows = [
        [
            "(all)",
            str(stats["count"]),
            *_pcts(stats.get("ttft_ms")),
            *_pcts(stats.get("gap_ms")),
            *_pcts(stats.get("duration_ms")),
        ]
    ]
    for model, m in sorted(stats.get("by_model", {}).items()):
        rows.append(
            [
                model,
                str(m["count"]),
                *_pcts(m.get("ttft_ms")),
                *_pcts(m.get("gap_ms")),
                *_pcts(m.get("duration_ms")),
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["latency in ms"]
    lines.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    for title, key in (("finish reasons", "finish_reasons"), ("outcomes", "outcomes")):
        counts = stats.get(key) or {}
        lines.append("")
        lines.append(
            title + ": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        )
    return "\n".join(lines)
