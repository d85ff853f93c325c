"""The markdown the run prints and writes: one table per measure, then the targets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import capacity as cap
from . import latency as lat
from . import recorder_bench as rb
from .stats import fmt, mark, ratio, summary, table

NAMES = {
    "direct": "direct",
    "bare": "bare mitmproxy",
    "streamtap": "streamtap (SQLite)",
    "litellm": "LiteLLM",
}


@dataclass
class Results:
    mode: str
    date: datetime
    machine: dict[str, str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    unchanged: dict[str, tuple[int, int]] = field(default_factory=dict)
    latency: dict[int, dict[str, lat.Samples]] = field(default_factory=dict)
    recorded: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    litellm: str | None = None  # version, or why it is not available
    litellm_ttft_err: dict[int, list[float]] = field(default_factory=dict)
    capacity: dict[str, cap.Ramp] = field(default_factory=dict)
    memory: dict[str, cap.Memory] = field(default_factory=dict)
    recorder: dict[str, rb.Throughput | None] = field(default_factory=dict)
    recorder_runs: dict[str, list[float]] = field(default_factory=dict)  # events/s of every run
    sustained: dict[str, rb.Sustained] = field(default_factory=dict)
    dashboard: str = "not measured"
    foreign: dict[str, float] = field(default_factory=dict)  # measure -> other processes' CPU share

    # -- derived figures, shared by the tables and the targets ------------------------------------------
    def lat(self, c: int, path: str) -> dict[str, float] | None:
        s = self.latency.get(c, {}).get(path)
        return lat.summarize(s) if s is not None and s.events else None

    def paths(self) -> list[str]:
        names = ["direct", "bare", "streamtap"]
        return [*names, "litellm"] if self.litellm is not None else names

    def capacity_of(self, path: str) -> float | None:
        ramp = self.capacity.get(path)
        level = ramp.capacity if ramp else None
        return level.delivered if level else None

    def capacity_vs_bare(self, path: str = "streamtap") -> tuple[float | None, float | None, str]:
        """`path`'s and bare's capacity on one basis, and the basis.

        Events/s delivered at the last passing level, unless the harness ran out before bare mitmproxy did
        (it passed every level): then bare's capacity is only a lower bound, and a ratio of delivered rates
        only an upper bound of the true one (it once showed 1.01x for a proxy that needed 25% more CPU per
        event). The basis is then what one fully busy CPU forwards (and records), 1e6 / CPU µs per event at
        each proxy's last passing level.
        """
        ramp, bare = self.capacity.get(path), self.capacity.get("bare")
        if ramp is not None and bare is not None and bare.capped:
            return ramp.cpu_bound, bare.cpu_bound, "events/s per CPU"
        return self.capacity_of(path), self.capacity_of("bare"), "events/s delivered"


def _cell(d: dict[str, float] | None, key: str, digits: int = 3) -> str:
    return fmt(d[key], digits) if d else "-"


def _diff(a: dict[str, float] | None, b: dict[str, float] | None, key: str) -> float | None:
    return a[key] - b[key] if a and b else None


def latency_table(r: Results) -> str:
    paths = r.paths()
    header = ["figure (ms)", *(NAMES[p] for p in paths), "streamtap − bare", "streamtap / bare"]
    rows = []
    figures = [
        ("event latency p50", "lat_p50"),
        ("event latency p99", "lat_p99"),
        ("event latency p99.9", "lat_p99.9"),
        ("longest stall (max event latency)", "lat_max"),
        ("added TTFT p50", "ttft_p50"),
        ("added TTFT p99", "ttft_p99"),
        ("proxy CPU per event (µs)", "cpu_us_per_event"),
    ]
    for c in sorted(r.latency):
        stats = {p: r.lat(c, p) for p in paths}
        for label, key in figures:
            digits = 1 if key == "cpu_us_per_event" else 3
            cells = [
                _cell(stats[p], key, digits) if not (p == "direct" and key.startswith("cpu")) else "-"
                for p in paths
            ]
            d = _diff(stats["streamtap"], stats["bare"], key)
            rows.append(
                [
                    f"{label} @ {c}",
                    *cells,
                    fmt(d, digits),
                    ratio(*(s[key] if s else None for s in (stats["streamtap"], stats["bare"]))),
                ]
            )
        counts = " / ".join(
            f"{int(s['events'])} ev, {int(s['streams'])} streams"
            + (f", {int(s['errors'])} errors" if s["errors"] else "")
            + (f", {int(s['mismatched'])} paired by token events" if s["mismatched"] else "")
            if s
            else "-"
            for s in stats.values()
        )
        rows.append([f"samples @ {c}", counts, *([""] * (len(header) - 2))])
    return table(header, rows)


def recorded_table(r: Results) -> str:
    header = [
        "concurrency",
        "streams matched",
        "TTFT error p50 (ms)",
        "TTFT error p99 (ms)",
        "|gap error| p50 (ms)",
        "|gap error| p99 (ms)",
        "LiteLLM TTFT error p50 / p99 (ms)",
        "the client's own |gap error| p99 via direct / bare / streamtap (ms)",
    ]
    rows = []
    for c, rec in sorted(r.recorded.items()):
        floor = " / ".join(_cell(r.lat(c, p), "gap_err_p99") for p in ("direct", "bare", "streamtap"))
        t, g = summary(rec["ttft_err_ms"]), summary(rec["gap_err_ms"])
        ll = r.litellm_ttft_err.get(c)
        lls = summary(ll) if ll else None
        rows.append(
            [
                str(c),
                str(int(rec["found"][0])),
                fmt(t["p50"]),
                fmt(t["p99"]),
                fmt(g["p50"]),
                fmt(g["p99"]),
                f"{fmt(lls['p50'])} / {fmt(lls['p99'])} ({int(lls['n'])})" if lls else "-",
                floor,
            ]
        )
    return table(header, rows)


def capacity_table(r: Results) -> str:
    header = [
        "path",
        "capacity (events/s)",
        "at streams",
        "proxy CPU there",
        "CPU per event there (µs)",
        "events/s per CPU (1e6 / CPU per event)",
        "vs bare",
        "levels: streams → delivered ev/s (client gap vs upstream gap; upstream gap ms; proxy CPU)",
        "recording caught up (s after the level)",
    ]
    rows = []
    for name, ramp in r.capacity.items():
        best = ramp.capacity
        levels = ", ".join(
            f"{lv.concurrency}→{lv.delivered:.0f} ({lv.growth * 100:+.0f}%; {lv.send_gap_ms:.2f}"
            + (f"; {lv.cpu_util * 100:.0f}%)" if not math.isnan(lv.cpu_util) else ")")
            for lv in ramp.levels
        )
        if name == "direct":  # no proxy: what the mock and the client manage together on their CPU
            peak = max(ramp.levels, key=lambda lv: lv.delivered) if ramp.levels else None
            rows.append(
                [
                    "direct (the harness's ceiling)",
                    f"{peak.delivered:.0f} at most" if peak else "-",
                    str(peak.concurrency) if peak else "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    levels,
                    "-",
                ]
            )
            continue
        caught = ", ".join(
            f"{lv.catch_up_s:.1f}" + (f" ({lv.unrecorded} missing)" if lv.unrecorded else "")
            for lv in ramp.levels
            if lv.catch_up_s is not None
        )
        rows.append(
            [
                NAMES[name],
                (f"≥ {best.delivered:.0f}" if ramp.capped else f"{best.delivered:.0f}") if best else "-",
                str(best.concurrency) if best else "-",
                f"{best.cpu_util * 100:.0f}%" if best and not math.isnan(best.cpu_util) else "-",
                _cpu_cell(ramp),
                fmt(ramp.cpu_bound, 0),
                _capacity_ratio(r, name),
                levels,
                caught or "-",
            ]
        )
    return table(header, rows)


def _cpu_cell(ramp: cap.Ramp) -> str:
    runs = ramp.cpu_per_event
    if not runs:
        return "-"
    if len(runs) == 1:
        return fmt(runs[0], 1)
    median = fmt(1e6 / ramp.cpu_bound, 1) if ramp.cpu_bound else "-"
    return f"{median} (median of {', '.join(fmt(x, 1) for x in runs)})"


def _capacity_ratio(r: Results, name: str) -> str:
    mine, bare, basis = r.capacity_vs_bare(name)
    return f"{ratio(mine, bare)} ({basis})" if name != "bare" else ratio(mine, bare)


def recorder_table(r: Results) -> str:
    header = [
        "database",
        "throughput (events/s)",
        "streams × events",
        "sustained 5,000 ev/s",
        "dropped",
        "written / submitted",
        "queue depth max / p99",
        "submitter lag max (ms)",
    ]
    rows = []
    for kind in ("sqlite", "postgresql"):
        if kind not in r.recorder:
            continue
        t = r.recorder[kind]
        if t is None:
            rows.append([kind, "skipped: PostgreSQL on 127.0.0.1:5432 unreachable", "", "", "", "", "", ""])
            continue
        s = r.sustained.get(kind)
        rows.append(
            [
                kind,
                f"{t.events_per_s:,.0f}"
                + (
                    f" (median of {', '.join(f'{v:,.0f}' for v in r.recorder_runs[kind])})"
                    if len(r.recorder_runs.get(kind, ())) > 1
                    else ""
                ),
                f"{t.streams} × {t.events // t.streams}",
                f"{s.seconds:.0f}s, {s.submitted * 50:,} events" if s else "not run",
                str(s.dropped) if s else "-",
                f"{s.written} / {s.submitted}" if s else "-",
                f"{s.depth_max} / {s.depth_p99:.0f}" if s else "-",
                f"{s.lag_s * 1000:.1f}" if s else "-",
            ]
        )
    return table(header, rows)


def memory_table(r: Results) -> str:
    rows = []
    for name, m in r.memory.items():
        (n1, a), (n2, b) = sorted(m.rss_mb.items())
        rows.append(
            [NAMES[name], f"{a:.1f}", f"{b:.1f}", f"{b - a:+.1f}", f"{m.seconds:.0f}s", str(m.errors)]
        )
    n1, n2 = next(iter(r.memory.values())).rss_mb if r.memory else (0, 0)
    header = [
        "proxy (fresh process)",
        f"RSS after {n1:,} streams (MB)",
        f"after {n2:,} (MB)",
        "growth (MB)",
        "took",
        "errors",
    ]
    return table(header, rows)


def targets(r: Results) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    st, bare, direct = r.lat(50, "streamtap"), r.lat(50, "bare"), r.lat(50, "direct")
    d50, d99 = _diff(st, bare, "lat_p50"), _diff(st, bare, "lat_p99")
    out.append(
        (
            "streamtap adds ≤ 0.1 ms p50 per event over bare @ 50",
            f"{fmt(d50)} ms",
            None if d50 is None else d50 <= 0.1,
        )
    )
    out.append(
        (
            "streamtap adds ≤ 0.5 ms p99 per event over bare @ 50",
            f"{fmt(d99)} ms",
            None if d99 is None else d99 <= 0.5,
        )
    )
    cs, cb, basis = r.capacity_vs_bare()
    ok = None if not (cs and cb) else cs >= 0.9 * cb
    out.append(
        (
            "capacity with recording ≥ 90% of bare",
            f"{ratio(cs, cb)} ({fmt(cs, 0)} vs {fmt(cb, 0)} {basis})",
            ok,
        )
    )
    rec = r.recorded.get(50)
    g = summary(rec["gap_err_ms"])["p99"] if rec and rec["gap_err_ms"] else None
    out.append(
        (
            "recorded gaps within 1 ms p99 of real send gaps @ 50",
            f"{fmt(g)} ms (a client's own view: {_cell(r.lat(50, 'direct'), 'gap_err_p99')} direct, "
            f"{_cell(r.lat(50, 'bare'), 'gap_err_p99')} through bare mitmproxy)",
            None if g is None else g <= 1.0,
        )
    )
    t = summary(rec["ttft_err_ms"])["p99"] if rec and rec["ttft_err_ms"] else None
    out.append(
        (
            "recorded TTFT − upstream first-token delay < 3 ms p99 @ 50",
            f"{fmt(t)} ms",
            None if t is None else t < 3.0,
        )
    )
    thr = r.recorder.get("sqlite")
    out.append(
        (
            "recorder ≥ 50,000 events/s into SQLite",
            f"{thr.events_per_s:,.0f} ev/s" if thr else "-",
            None if thr is None else thr.events_per_s >= 50_000,
        )
    )
    s = r.sustained.get("sqlite")
    out.append(
        (
            "zero drops at 5,000 events/s for 60 s (SQLite)" + ("" if r.mode == "full" else "; quick: 5 s"),
            f"{s.dropped} dropped of {s.submitted * 2:,} items in {s.seconds:.0f}s" if s else "-",
            None if s is None else (s.dropped == 0 and s.written == s.submitted),
        )
    )
    p999 = st["lat_p99.9"] if st else None
    over = _diff(st, direct, "lat_p99.9")
    out.append(
        (
            "p99.9 event latency < 5 ms @ 50 while recording",
            f"{fmt(p999)} ms ({fmt(over)} over direct)",
            None if p999 is None else p999 < 5.0,
        )
    )
    dt = _diff(st, bare, "ttft_p50")
    dt99 = _diff(st, bare, "ttft_p99")
    out.append(
        (
            "added TTFT within 0.5 ms of bare's @ 50 (p50)",
            f"{fmt(dt)} ms (p99: {fmt(dt99)} ms)",
            None if dt is None else abs(dt) <= 0.5,
        )
    )
    m = r.memory.get("streamtap")
    if m:
        (_, a), (_, b) = sorted(m.rss_mb.items())
        out.append(
            (
                "memory growth 1,000 → 10,000 streams < 20 MB"
                + ("" if r.mode == "full" else "; quick: 100 → 1,000"),
                f"{b - a:+.1f} MB",
                b - a < 20,
            )
        )
    else:
        out.append(("memory growth 1,000 → 10,000 streams < 20 MB", "-", None))
    return out


def targets_table(r: Results) -> str:
    return table(["target", "measured", ""], [[a, b, mark(c)] for a, b, c in targets(r)])


def _header(r: Results) -> list[str]:
    m = r.machine
    versions = ", ".join(
        f"{k} {m[k]}" for k in ("python", "mitmproxy", "streamtap", "sqlalchemy", "sqlite", "psycopg")
    )
    if r.litellm is not None:
        versions += f", litellm {r.litellm}"
    return [
        f"- date: {r.date:%Y-%m-%d %H:%M} UTC; mode: {r.mode}; took {r.seconds:.0f}s",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; load average before "
        f"{r.load_before[0]:.2f}, after {r.load_after[0]:.2f}",
        f"- versions: {versions}",
        *(f"- {n}" for n in r.notes),
        "- noise: share of the machine's CPU time used by other processes while each measure ran: "
        + (", ".join(f"measure {k} {v * 100:.0f}%" for k, v in sorted(r.foreign.items())) or "-"),
    ]


def render(r: Results) -> str:
    parts: list[Any] = ["# streamtap benchmark results", "", *_header(r), ""]
    if r.latency:
        parts += [
            "## 1. Latency per event: upstream send → client read (ms), 20 ms gaps",
            "",
            latency_table(r),
            "",
        ]
    if r.recorded:
        parts += [
            "## 2. Recorded timings vs the upstream's own (streamtap's database; LiteLLM's own log)",
            "",
            recorded_table(r),
            "",
        ]
    if r.capacity:
        parts += [
            "## 3. Capacity: events/s one proxy process forwards before the gaps its client sees grow >10% "
            "over the gaps the upstream sent (streams of 100 tokens, 5 ms gaps; proxy alone on its CPU). "
            "Where the harness runs out first for both (every level passes), they compare by events/s per "
            "CPU: 1e6 / CPU µs per event at the top level, recording's catch-up included (the full run "
            "measures that level twice more, the paths taking turns, and takes the median)",
            "",
            capacity_table(r),
            "",
        ]
    if r.recorder:
        parts += [
            "## 4. Recorder alone (streams of 50 events; start + record per stream, as the proxy submits)",
            "",
            recorder_table(r),
            "",
        ]
    if r.memory:
        parts += ["## 5. Memory", "", memory_table(r), ""]
    parts += ["## 6. Dashboard read functions", "", r.dashboard, ""]
    parts += ["## 7. Pass-through and peers", ""]
    parts += [
        table(
            ["path", "bodies byte-identical to what the upstream wrote"],
            [[NAMES[p], f"{a}/{b}"] for p, (a, b) in r.unchanged.items()],
        ),
        "",
        f"LiteLLM: {r.litellm if r.litellm is not None else 'not run (use --peers)'}",
        "",
        "## Targets",
        "",
        targets_table(r),
    ]
    return "\n".join(str(p) for p in parts)


def render_quick(r: Results) -> str:
    rows = []
    for c in sorted(r.latency):
        st, bare = r.lat(c, "streamtap"), r.lat(c, "bare")
        for key in ("lat_p50", "lat_p99", "lat_p99.9", "ttft_p50", "cpu_us_per_event"):
            rows.append(
                [
                    f"{key} @ {c}",
                    ratio(st[key] if st else None, bare[key] if bare else None),
                    fmt(_diff(st, bare, key)),
                ]
            )
    rows.append(["capacity", _capacity_ratio(r, "streamtap"), ""])
    lines = [
        f"streamtap bench --quick ({r.seconds:.0f}s; other processes used "
        + ", ".join(f"{v * 100:.0f}% during measure {k}" for k, v in sorted(r.foreign.items()))
        + " of the machine)",
        "",
        table(["figure", "streamtap / bare", "streamtap − bare"], rows),
        "",
        targets_table(r),
    ]
    overview = [line for line in r.dashboard.splitlines() if line.startswith("overview()")]
    lines += ["", "dashboard: " + (overview[0] if overview else r.dashboard.splitlines()[0])]
    return "\n".join(lines)
