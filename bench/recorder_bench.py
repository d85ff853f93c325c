"""Measure 4: `streamtap.recorder.Recorder` on its own, fed synthetic finished streams.

Each synthetic stream is what the proxy submits for one exchange: a `StreamStart`, then a `StreamRecord`
with N events of realistic OpenAI chunk bytes.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from streamtap.db.engine import make_engine, upgrade
from streamtap.db.models import Stream
from streamtap.recorder import Recorder
from streamtap.records import Choice, EventKind, EventRecord, Outcome, StreamRecord, StreamStart, Usage

from .stats import pct

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def _events(n: int) -> tuple[EventRecord, ...]:
    out = []
    for i in range(n):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1764000000,
            "model": "mock-gpt",
            "system_fingerprint": "fp_0123456789",
            "choices": [
                {"index": 0, "delta": {"content": f" word{i}"}, "logprobs": None, "finish_reason": None}
            ],
        }
        raw = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        out.append(
            EventRecord(i, 20.0 + 20.0 * i, None if i == 0 else 20.0, EventKind.DATA, None, raw, None, True)
        )
    return tuple(out)


def _stream(events: tuple[EventRecord, ...]) -> tuple[StreamStart, StreamRecord]:
    sid = uuid.uuid4().hex
    now = datetime.now(UTC)
    common = {
        "id": sid,
        "started_at": now,
        "method": "POST",
        "url": "http://127.0.0.1/v1/chat/completions",
        "host": "127.0.0.1",
        "path": "/v1/chat/completions",
        "request_model": "mock-gpt",
        "api_key_fp": "sk-...bench",
        "proxy_instance": "bench",
    }
    body = '{"model":"mock-gpt","messages":[{"role":"user","content":"Say hello."}],"stream":true}'
    start = StreamStart(**common, request_body=body)  # type: ignore[arg-type]
    record = StreamRecord(
        **common,  # type: ignore[arg-type]
        status_code=200,
        stream=True,
        model="mock-gpt",
        outcome=Outcome.COMPLETED,
        error=None,
        ttfb_ms=1.0,
        ttft_ms=20.0,
        ttfc_ms=20.0,
        duration_ms=20.0 * len(events),
        usage=Usage(12, len(events), 12 + len(events)),
        choices=(Choice(0, "hello " * len(events), None, None, (), "stop"),),
        events=events,
        request_body=body,
    )
    return start, record


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str | None]:
    """A migrated, empty database URL; None when PostgreSQL is unreachable."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir}/recorder-{uuid.uuid4().hex[:8]}.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    try:
        import psycopg

        admin = psycopg.connect(PG_DSN, connect_timeout=2, autocommit=True)
    except Exception:
        yield None
        return
    schema = f"streamtap_bench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            yield url
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _count_events(engine: sa.Engine) -> int:
    # written in the same transaction as the events, in every schema (bench.ab runs older trees too)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(Stream.event_count), 0))).scalar_one())


@dataclass
class Throughput:
    streams: int
    events: int
    seconds: float
    written: int
    dropped: int
    stored_events: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def throughput(url: str, streams: int, events_per_stream: int = 50) -> Throughput:
    """Everything submitted at once; the time until close() has committed the last batch."""
    events = _events(events_per_stream)
    items = [_stream(events) for _ in range(streams)]
    engine = make_engine(url)
    rec = Recorder(engine, queue_size=2 * streams + 10)
    try:
        t0 = time.perf_counter()
        rec.start()
        for start, record in items:
            rec.submit_start(start)
            rec.submit(record)
        rec.close(timeout=300)
        seconds = time.perf_counter() - t0
        stored = _count_events(engine)
    finally:
        engine.dispose()
    return Throughput(streams, streams * events_per_stream, seconds, rec.written, rec.dropped, stored)


@dataclass
class Sustained:
    rate: float  # events/s offered
    seconds: float
    submitted: int
    written: int
    dropped: int
    stored_events: int
    depth: list[int] = field(default_factory=list)  # queue depth every 100 ms
    lag_s: float = 0.0  # how late the submitter fell behind its schedule, at worst

    @property
    def depth_max(self) -> int:
        return max(self.depth, default=0)

    @property
    def depth_p99(self) -> float:
        return pct(sorted(self.depth), 99)


def sustained(url: str, rate: float, seconds: float, events_per_stream: int = 50) -> Sustained:
    """`rate` events/s as streams of `events_per_stream`, paced evenly, with the proxy's defaults
    (queue of 10,000, batches of up to 500)."""
    events = _events(events_per_stream)
    per_s = rate / events_per_stream
    n = round(per_s * seconds)
    items = [_stream(events) for _ in range(n)]
    engine = make_engine(url)
    rec = Recorder(engine)
    depth: list[int] = []
    lag = 0.0
    try:
        rec.start()
        t0 = time.monotonic()
        next_sample = t0
        for i, (start, record) in enumerate(items):
            due = t0 + i / per_s
            while (now := time.monotonic()) < due:
                if now >= next_sample:
                    depth.append(rec.depth)
                    next_sample += 0.1
                time.sleep(min(due - now, 0.002))
            lag = max(lag, time.monotonic() - due)
            rec.submit_start(start)
            rec.submit(record)
        elapsed = time.monotonic() - t0
        rec.close(timeout=120)
        stored = _count_events(engine)
    finally:
        engine.dispose()
    return Sustained(rate, elapsed, n, rec.written, rec.dropped, stored, depth, lag)
