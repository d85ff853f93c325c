"""`python -m bench.bench_dashboard [--streams 100000] [--events-per-stream 22] [--db URL]`: the dashboard's
overview queries at scale.

Seeds a SQLite database once (cached under /tmp/streamtap-bench; about a minute for 100,000 streams and two
million events), then times every read function behind the overview page, best of `--repeat` runs, for the
"all" and "24h" windows. The baseline, measured in the same run, is `streamtap stats` (`read.stats`):
exact percentiles over the same rows with window functions.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamtap import overview as ov
from streamtap import seed as seed_module
from streamtap.db.engine import PAGE_SIZE, make_engine, upgrade
from streamtap.db.models import Stream
from streamtap.read import stats
from streamtap.seed import seed_database

CACHE = Path("/tmp/streamtap-bench")
BUDGET_S = 2.0  # the overview's read functions, all together, at 100,000 streams / 2,000,000 events
T = TypeVar("T")


@dataclass
class Timing:
    label: str
    seconds: float
    note: str = ""


def best_of[T](repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - began)
    assert result is not None
    return best, result


def seeded_sqlite(streams: int, events_per_stream: int) -> str:
    # A change to the generator, or to a new database's page size, invalidates the cached database.
    generator = Path(seed_module.__file__ or "").read_bytes() + str(PAGE_SIZE).encode()
    version = hashlib.sha256(generator).hexdigest()[:8]
    path = CACHE / f"dashboard-{streams}x{events_per_stream}-{version}.db"
    done = path.with_suffix(".ok")
    url = f"sqlite:///{path}"
    if not done.exists():
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        engine = make_engine(url)
        try:
            upgrade(engine)
            began = time.perf_counter()
            result = seed_database(
                engine, streams=streams, events_per_stream=events_per_stream, seed=1, span=timedelta(days=7)
            )
            took = time.perf_counter() - began
            print(
                f"seeded {result.streams:,} streams, {result.events:,} events in {took:.1f}s", file=sys.stderr
            )
        finally:
            engine.dispose()
        done.touch()
    return url


def measure(session: Session, window: str, now: datetime, repeat: int) -> list[Timing]:
    """Each overview query, then overview() as the dashboard calls it."""
    f = ov.Filters.for_window(window, now=now)
    out: list[Timing] = []

    def timed(label: str, fn: Callable[[], T], note: str = "") -> T:
        seconds, result = best_of(repeat, fn)
        out.append(Timing(label, seconds, note))
        return result

    start, end = timed("time_range", lambda: ov.time_range(session, f, now=now))
    width = ov.bucket_width(start, end)
    counts = timed("stream_counts", lambda: ov.stream_counts(session, f, width=width), f"{width}s buckets")
    ttft = timed("ttft_cells", lambda: ov.ttft_cells(session, f, width=width))
    durations = timed("duration_cells", lambda: ov.duration_cells(session, f))
    expected = sum(r.gaps for r in counts)
    sample = min(1.0, ov.GAP_SAMPLE_LIMIT / expected) if expected else 1.0
    gaps = timed(
        "gap_cells",
        lambda: ov.gap_cells(session, f, width=width, sample=sample),
        f"{100 * sample:.1f}% of streams",
    )
    timed(
        "build_overview",
        lambda: ov.build_overview(
            counts, ttft, gaps, durations, width=width, start=start, end=end, sample=sample
        ),
    )
    o = timed("= overview()", lambda: ov.overview(session, f, now=now))
    out[-1].note = f"{o.summary.streams:,} streams, {o.gap_samples:,} gaps read"
    if sample < 1.0:
        timed("gap_cells, every gap", lambda: ov.gap_cells(session, f, width=width), "not used by the page")
    assert o.summary.streams == sum(r.streams for r in counts)
    return out


def others(session: Session, now: datetime, repeat: int) -> list[Timing]:
    f = ov.Filters.for_window("24h", now=now)
    out = []
    for label, fn in (
        ("has_streams", lambda: ov.has_streams(session)),
        ("filter_options", lambda: ov.filter_options(session)),
        ("search_streams (24h, newest 500)", lambda: ov.search_streams(session, f, limit=500)),
        (
            "search_streams ('latency', text)",
            lambda: ov.search_streams(session, f, query="latency", limit=500),
        ),
    ):
        seconds, _ = best_of(repeat, fn)
        out.append(Timing(label, seconds))
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_dashboard", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument(
        "--events-per-stream", type=int, default=22, help="average; 22 gives ~2,000,000 events"
    )
    parser.add_argument("--db", help="an existing database to measure instead (seeded first if it is empty)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true", help="skip read.stats() (slow at this scale)")
    args = parser.parse_args(argv)

    url = args.db or seeded_sqlite(args.streams, args.events_per_stream)
    engine = make_engine(url)
    try:
        if args.db:
            upgrade(engine)
            with Session(engine) as session:
                if not ov.has_streams(session):
                    seed_database(
                        engine,
                        streams=args.streams,
                        events_per_stream=args.events_per_stream,
                        seed=1,
                        span=timedelta(days=7),
                    )
        with Session(engine) as session:
            n_streams = session.scalar(sa.select(sa.func.count()).select_from(Stream)) or 0
            n_events = session.scalar(sa.select(sa.func.sum(Stream.event_count))) or 0
            last = session.scalar(sa.select(sa.func.max(Stream.started_at)))
        now = (last.replace(tzinfo=UTC) if last and last.tzinfo is None else last) or datetime.now(UTC)
        print(
            f"\n# streamtap dashboard: {n_streams:,} streams, {n_events:,} events ({engine.dialect.name})\n"
        )

        if engine.dialect.name == "postgresql":
            # what autovacuum does to a table that has settled: index-only scans need the visibility map
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        results: dict[str, list[Timing]] = {}
        with Session(engine) as session:
            for window in ("all", "24h"):
                results[window] = measure(session, window, now, args.repeat)
            extra = others(session, now, args.repeat)

        print("| window | query | time | note |")
        print("|---|---|---:|---|")
        for window in ("all", "24h"):
            for t in results[window]:
                name = f"**{t.label}**" if t.label.startswith("=") else t.label
                print(f"| {window} | {name} | {ms(t.seconds)} | {t.note} |")
        print("\n| other read functions | time |\n|---|---:|")
        for t in extra:
            print(f"| {t.label} | {ms(t.seconds)} |")

        worst = max(next(t.seconds for t in results[w] if t.label == "= overview()") for w in ("all", "24h"))
        print(
            f"\noverview(), worst window: {ms(worst)} "
            f"(budget {BUDGET_S:.0f} s at 100k/2M: {'met' if worst <= BUDGET_S else 'NOT met'})"
        )
        if not args.no_baseline:
            with Session(engine) as session:
                seconds, _ = best_of(1, lambda: stats(session))
            print(
                f"baseline read.stats() over everything: {ms(seconds)}; "
                f"overview('all') is {seconds / worst:.1f}x faster"
            )
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
