"""Measures 1 and 2: per-event latency from the upstream's send to the client's read, TTFT, and what
streamtap recorded compared with what the upstream really did."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .load import StreamResult, build_request, dechunk, run_load
from .mock_proc import Entry, MockProcess
from .procs import cpu_seconds
from .stats import summary


@dataclass
class Path:
    """One way from the client to the mock upstream."""

    name: str
    url: str
    pid: int | None = None  # the proxy process, if any
    headers: dict[str, str] = field(default_factory=dict)  # e.g. the LiteLLM master key
    reframes: bool = False  # may not forward the upstream's events one for one (keep bodies to pair them)
    recorded: Callable[[], float] | None = None  # records written so far, for a path that records

    def request(self, *, chunks: int, gap_ms: float, ttft_ms: float) -> bytes:
        return build_request(
            self.url, chunks=chunks, gap_ms=gap_ms, ttft_ms=ttft_ms, extra_headers=self.headers
        )


@dataclass
class Samples:
    """Everything one path gave at one concurrency."""

    latency_ms: list[float] = field(default_factory=list)  # per event: client read - upstream send
    added_ttft_ms: list[float] = field(default_factory=list)  # client TTFT - upstream TTFT
    # per event after the first: |client-observed gap - sent gap| = |latency_k - latency_k-1|, what a recorder
    # stamping at the client would get wrong: the floor the recorded gaps are compared against
    gap_err_ms: list[float] = field(default_factory=list)
    streams: int = 0
    events: int = 0
    errors: int = 0
    mismatched: int = 0  # streams whose event count differs from the upstream's send log
    entries: dict[str, Entry] = field(default_factory=dict)  # the upstream's log, by completion id
    seconds: float = 0.0
    cpu_s: float = 0.0  # CPU time the proxy process used meanwhile (all its threads)

    def add(self, results: list[StreamResult], entries: dict[str, Entry]) -> None:
        for res in results:
            entry = entries.get(res.cid)
            if res.status != 200 or res.error is not None or entry is None:
                self.errors += 1
                continue
            received, first_token_at, sends = entry
            self.entries[res.cid] = entry
            self.streams += 1
            self.events += len(res.events)
            by_index = {i: t for t, i, _ in sends}
            if len(res.events) == len(by_index):
                pairs = [(t, by_index[k]) for k, t in enumerate(res.events) if k in by_index]
                first = next((i for _, i, token in sends if token), None)
                first_seen = res.events[first] if first is not None else None
            else:
                # Not the upstream's events one for one (a proxy that re-frames the stream): pair the
                # token-carrying events in order, which every such proxy still forwards one by one.
                self.mismatched += 1
                seen = [t for t, tokens in zip(res.events, _token_events(res.body), strict=False) if tokens]
                pairs = list(zip(seen, (t for t, _, token in sends if token), strict=False))
                first_seen = seen[0] if seen else None
            lats = [(seen_at - sent) * 1000 for seen_at, sent in pairs]
            self.latency_ms += lats
            self.gap_err_ms += [abs(b - a) for a, b in itertools.pairwise(lats)]
            if first_seen is not None and first_token_at is not None:
                upstream_ttft = first_token_at - received
                self.added_ttft_ms.append((first_seen - res.t_send - upstream_ttft) * 1000)


def _token_events(body: bytes) -> list[bool]:
    """For each event of a chat-completion stream body: does it carry text (a non-empty delta content)?"""
    out = []
    for raw in body.split(b"\n\n")[:-1]:
        tokens = False
        for line in raw.split(b"\n"):
            if line.startswith(b"data:") and b"[DONE]" not in line:
                try:
                    obj = json.loads(line[5:])
                except ValueError:
                    continue
                for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content")):
                        tokens = True
        out.append(tokens)
    return out


@dataclass
class LatencyConfig:
    levels: tuple[int, ...] = (1, 50, 200)
    gap_ms: float = 20.0
    ttft_ms: float = 20.0
    chunks: int = 50
    duration: dict[int, float] = field(default_factory=lambda: {1: 6.0, 50: 5.0, 200: 5.0})
    rounds: int = 2
    level_rounds: dict[int, int] = field(default_factory=dict)  # more, shorter rounds at some levels

    def rounds_at(self, c: int) -> int:
        return self.level_rounds.get(c, self.rounds)


def warm_up(mock: MockProcess, paths: list[Path]) -> None:
    """A few short streams through every path, so imports and first connections are not measured."""
    for path in paths:
        req = path.request(chunks=5, gap_ms=1, ttft_ms=1)
        load = run_load(url=path.url, request=req, concurrency=4, streams=16)
        if load.errors:
            raise RuntimeError(f"warm-up through {path.name} failed: {load.errors} of 16 streams")
    mock.clear()


def measure(mock: MockProcess, paths: list[Path], cfg: LatencyConfig) -> dict[int, dict[str, Samples]]:
    """Rounds of (level x path), the order of paths rotating each round so drift hits all alike."""
    out: dict[int, dict[str, Samples]] = {c: {p.name: Samples() for p in paths} for c in cfg.levels}
    for rnd in range(max(cfg.rounds_at(c) for c in cfg.levels)):
        for c in cfg.levels:
            if rnd >= cfg.rounds_at(c):
                continue
            order = paths[rnd % len(paths) :] + paths[: rnd % len(paths)]
            for path in order:
                req = path.request(chunks=cfg.chunks, gap_ms=cfg.gap_ms, ttft_ms=cfg.ttft_ms)
                t0, cpu0 = time.monotonic(), [0.0]

                def measured(path: Path = path, cpu0: list[float] = cpu0) -> None:
                    cpu0[0] = _cpu(path)

                load = run_load(
                    on_start=measured,
                    url=path.url,
                    request=req,
                    concurrency=c,
                    duration=cfg.duration[c] / cfg.rounds_at(c),
                    stagger=(cfg.ttft_ms + cfg.chunks * cfg.gap_ms) / 1000,
                    warm=path.request(chunks=1, gap_ms=0, ttft_ms=0),
                    seed=rnd * 1000 + c,
                    keep_body=path.reframes,
                )
                samples = out[c][path.name]
                samples.seconds += time.monotonic() - t0
                samples.cpu_s += _cpu(path) - cpu0[0]
                samples.add(load.results, mock.entries([r.cid for r in load.results]))
                mock.clear()
    return out


def _cpu(path: Path) -> float:
    return cpu_seconds(path.pid) if path.pid else 0.0


def summarize(samples: Samples) -> dict[str, float]:
    lat = summary(samples.latency_ms)
    ttft = summary(samples.added_ttft_ms)
    return {
        **{f"lat_{k}": v for k, v in lat.items()},
        **{f"ttft_{k}": v for k, v in ttft.items()},
        "streams": samples.streams,
        "events": samples.events,
        "errors": samples.errors,
        "mismatched": samples.mismatched,
        "gap_err_p99": summary(samples.gap_err_ms)["p99"] if samples.gap_err_ms else math.nan,
        "cpu_us_per_event": samples.cpu_s / samples.events * 1e6 if samples.events else math.nan,
    }


# -- measure 2 -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _current_schema(db_url: str) -> Iterator[str]:
    """`db_url`, or, for a SQLite database another source tree wrote in an older schema (`bench.ab`), a
    migrated copy: its proxy may still be writing the original."""
    import sqlite3

    from streamtap.db.engine import check_schema, make_engine, upgrade
    from streamtap.errors import DatabaseError

    engine = make_engine(db_url)
    try:
        check_schema(engine)
        current = True
    except DatabaseError:
        current = False
    finally:
        engine.dispose()
    if current or not db_url.startswith("sqlite:///"):
        yield db_url
        return
    with tempfile.TemporaryDirectory(prefix="streamtap-bench-schema-") as tmp:
        copy = f"{tmp}/copy.db"
        src, dst = sqlite3.connect(db_url.removeprefix("sqlite:///")), sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        upgrade(f"sqlite:///{copy}")
        yield f"sqlite:///{copy}"


def recorded_errors(db_url: str, entries: dict[str, Entry], since: datetime) -> dict[str, list[float]]:
    """Recorded TTFT minus the upstream's request-to-first-token delay, and |recorded gap - send gap| per
    event, for the recorded streams whose completion id is in `entries`."""
    from sqlalchemy.orm import Session

    from streamtap import read
    from streamtap.db.engine import make_engine

    ttft_err: list[float] = []
    gap_err: list[float] = []
    found = 0
    with _current_schema(db_url) as url:
        engine = make_engine(url)
        try:
            with Session(engine) as session:
                records = read.get_streams(session, since=since)
        finally:
            engine.dispose()
    for rec in records:
        cid = _completion_id(rec.events[0].data if rec.events else None)
        entry = entries.get(cid)
        if entry is None:
            continue
        found += 1
        received, first_token_at, sends = entry
        if rec.ttft_ms is not None and first_token_at is not None:
            ttft_err.append(rec.ttft_ms - (first_token_at - received) * 1000)
        by_index = {i: t for t, i, _ in sends}
        for prev, ev in zip(rec.events, rec.events[1:], strict=False):
            a, b = by_index.get(prev.seq), by_index.get(ev.seq)
            if a is not None and b is not None:
                gap_err.append(abs((ev.t_ms - prev.t_ms) - (b - a) * 1000))
    return {"ttft_err_ms": ttft_err, "gap_err_ms": gap_err, "found": [float(found)]}


def wait_recorded(db_url: str, since: datetime, expected: int, timeout: float = 30.0) -> int:
    """Poll until `expected` finished streams started at or after `since` are in the database."""
    import sqlalchemy as sa

    from streamtap.db.engine import make_engine
    from streamtap.db.models import Stream

    engine = make_engine(db_url)
    deadline = time.monotonic() + timeout
    n = 0
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                n = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(Stream)
                    .where(Stream.started_at >= since, Stream.outcome != "in_progress")
                ).scalar_one()
            if n >= expected:
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    return n


def _completion_id(data: str | None) -> str:
    if not data:
        return ""
    try:
        obj = json.loads(data)
    except ValueError:
        return ""
    return str(obj.get("id", "")) if isinstance(obj, dict) else ""


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- pass-through ----------------------------------------------------------------------------------------


def bytes_unchanged(mock: MockProcess, path: Path, chunks: int = 20) -> tuple[int, int]:
    """(streams whose body the client received byte for byte as the upstream wrote it, streams checked)."""
    mock.capture(True)
    try:
        req = path.request(chunks=chunks, gap_ms=2, ttft_ms=5)
        load = run_load(url=path.url, request=req, concurrency=4, streams=8, keep_body=True)
        wire = mock.wire([r.cid for r in load.results])
    finally:
        mock.capture(False)
        mock.clear()
    same = sum(1 for r in load.results if r.cid in wire and dechunk(wire[r.cid]) == r.body)
    return same, len(load.results)
