"""Measure 3 (capacity: events/s one proxy process forwards before gaps grow) and measure 5 (memory)."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from .latency import Path
from .load import run_load
from .mock_proc import MockProcess
from .procs import cpu_seconds, rss_mb


@dataclass
class Level:
    concurrency: int
    offered: float  # events/s the upstream would send at its nominal gap
    delivered: float  # events/s the client received in the steady part of the run
    gap_ms: float  # mean gap between a stream's token events, as the client saw them
    send_gap_ms: float  # the same, as the upstream sent them (it slows down too when its CPU is short)
    cpu_util: float = math.nan  # the proxy's CPU time / wall time
    cpu_us_per_event: float = math.nan  # the proxy's CPU time per event forwarded (and recorded)
    errors: int = 0
    catch_up_s: float | None = (
        None  # a recording path: seconds after the level until every stream was written
    )
    unrecorded: int = 0  # ... and the streams still not written when we stopped waiting

    @property
    def growth(self) -> float:
        """How much longer the gaps the client saw were than the gaps the upstream sent."""
        return self.gap_ms / self.send_gap_ms - 1


@dataclass
class Ramp:
    path: str
    levels: list[Level] = field(default_factory=list)
    # the top level measured again, when every level passed (see `ramps`)
    repeats: list[Level] = field(default_factory=list)

    @property
    def capacity(self) -> Level | None:
        """The busiest level before the first one whose gaps grew by more than 10%."""
        best = None
        for level in self.levels:
            if level.growth > 0.10 or level.errors or level.unrecorded:
                break
            best = level
        return best

    @property
    def capped(self) -> bool:
        """Every level passed: the harness ran out before the proxy did, the capacity is a lower bound."""
        return bool(self.levels) and self.capacity is self.levels[-1]

    @property
    def cpu_per_event(self) -> list[float]:
        """CPU µs per event at capacity: the level's own, then its repeats' (same streams, later)."""
        best = self.capacity
        if best is None:
            return []
        runs = [best, *(lv for lv in self.repeats if lv.concurrency == best.concurrency)]
        return [lv.cpu_us_per_event for lv in runs if not math.isnan(lv.cpu_us_per_event)]

    @property
    def cpu_bound(self) -> float | None:
        """Events/s one fully busy CPU would forward, from the CPU time per event at capacity (the median of
        the level and its repeats)."""
        runs = self.cpu_per_event
        return 1e6 / statistics.median(runs) if runs else None


@dataclass
class CapacityConfig:
    gap_ms: float = 5.0
    chunks: int = 100
    levels: tuple[int, ...] = (20, 40, 60, 80, 100, 120, 140, 160, 180, 200)
    duration: float = 3.0
    warmup: float = 0.5  # seconds at the start of a level not counted (streams ramping up)
    # When every level passes, the CPU per event at the top one is what compares paths: it moved ±5% between
    # runs measured once, so the top level runs this many more times, the paths taking turns (median of all)
    top_repeats: int = 2


def _catch_up(path: Path, before: float, streams: int, timeout: float = 60.0) -> tuple[float, int]:
    """Wait until a recording path has written `streams` more records than `before`: (seconds, missing)."""
    assert path.recorded is not None
    t0 = time.monotonic()
    while True:
        missing = int(before + streams - path.recorded())
        if missing <= 0 or time.monotonic() - t0 > timeout:
            return time.monotonic() - t0, max(0, missing)
        time.sleep(0.05)


def _level(mock: MockProcess, path: Path, c: int, cfg: CapacityConfig) -> Level:
    cpu0 = [0.0]
    recorded0 = path.recorded() if path.recorded is not None else 0.0

    def measured() -> None:
        cpu0[0] = cpu_seconds(path.pid) if path.pid else 0.0

    load = run_load(
        url=path.url,
        request=path.request(chunks=cfg.chunks, gap_ms=cfg.gap_ms, ttft_ms=0),
        concurrency=c,
        duration=cfg.duration,
        stagger=cfg.chunks * cfg.gap_ms / 1000,
        warm=path.request(chunks=1, gap_ms=0, ttft_ms=0),
        on_start=measured,
    )
    cpu = (cpu_seconds(path.pid) - cpu0[0]) if path.pid else math.nan
    wall = time.monotonic() - load.started_at
    catch_up, unrecorded = (
        # every stream of the level is recorded, and so is each worker's warm-up exchange
        _catch_up(path, recorded0, len(load.results) + c) if path.recorded is not None else (None, 0)
    )
    # What the level's events cost in all, recording included: a worker that fell behind during the load
    # spends the rest of it while we wait above.
    cpu_all = (cpu_seconds(path.pid) - cpu0[0]) if path.pid else math.nan
    entries = mock.entries([r.cid for r in load.results])
    mock.clear()
    lo, hi = load.started_at + cfg.warmup, load.started_at + cfg.duration
    in_window = sum(1 for r in load.results for t in r.events if lo <= t < hi)
    events = sum(len(r.events) for r in load.results)
    # first to last token event of each stream: the role chunk before, the finish chunk and [DONE] after
    seen = sent = 0.0
    gaps = 0
    for r in load.results:
        entry = entries.get(r.cid)
        n = len(r.events)
        if entry is None or r.error is not None or n < 6:
            continue
        sends = {i: t for t, i, _ in entry[2]}
        if 1 not in sends or n - 3 not in sends:
            continue
        seen += r.events[n - 3] - r.events[1]
        sent += sends[n - 3] - sends[1]
        gaps += n - 4
    return Level(
        concurrency=c,
        offered=c * 1000 / cfg.gap_ms,
        delivered=in_window / (hi - lo),
        gap_ms=seen / gaps * 1000 if gaps else math.nan,
        send_gap_ms=sent / gaps * 1000 if gaps else math.nan,
        cpu_util=cpu / wall,
        cpu_us_per_event=cpu_all / events * 1e6 if events else math.nan,
        errors=load.errors,
        catch_up_s=catch_up,
        unrecorded=unrecorded,
    )


def ramps(mock: MockProcess, paths: list[Path], cfg: CapacityConfig) -> dict[str, Ramp]:
    """More and more concurrent small-gap streams, the paths taking turns at each level (so a burst of
    noise does not land on one path only), until a path's gaps grew by >10% at two levels in a row."""
    out = {p.name: Ramp(p.name) for p in paths}
    failed = dict.fromkeys(out, 0)
    for c in cfg.levels:
        for path in paths:
            if failed[path.name] >= 2:
                continue
            level = _level(mock, path, c, cfg)
            out[path.name].levels.append(level)
            bad = level.growth > 0.10 or level.errors or level.unrecorded
            failed[path.name] = failed[path.name] + 1 if bad else 0
        if all(n >= 2 for n in failed.values()):
            break
    capped = [p for p in paths if p.pid is not None and out[p.name].capped]
    for _ in range(cfg.top_repeats):
        for path in capped:
            top = out[path.name].levels[-1].concurrency
            out[path.name].repeats.append(_level(mock, path, top, cfg))
    return out


# -- measure 5 -------------------------------------------------------------------------------------------


@dataclass
class Memory:
    path: str
    rss_mb: dict[int, float] = field(default_factory=dict)  # streams served so far -> RSS
    seconds: float = 0.0
    errors: int = 0


def memory(
    path: Path, checkpoints: tuple[int, ...], concurrency: int = 20, gap_ms: float = 4.0, settle: float = 1.0
) -> Memory:
    """RSS of a fresh proxy process (and its worker) after N short streams (5 tokens), for each N.

    The streams are paced (`gap_ms` between tokens: ~7,000 events/s at 20 streams, below every path's
    capacity), and a recording path is sampled once it has written every stream: this measures what the
    proxy keeps per stream, not a backlog. (A flood beyond capacity leaves a backlog for streamtap's worker,
    bounded by the channel's `max_pending`: bench/README.md.)
    """
    assert path.pid is not None
    out = Memory(path.name)
    req = path.request(chunks=5, gap_ms=gap_ms, ttft_ms=0)
    done = 0
    t0 = time.monotonic()
    recorded0 = path.recorded() if path.recorded is not None else 0.0
    for n in checkpoints:
        load = run_load(
            url=path.url, request=req, concurrency=concurrency, streams=n - done, keep_results=False
        )
        done = n
        out.errors += load.errors
        if path.recorded is not None:
            _, missing = _catch_up(path, recorded0, n)
            out.errors += missing
        time.sleep(settle)
        out.rss_mb[n] = rss_mb(path.pid)
    out.seconds = time.monotonic() - t0
    return out
