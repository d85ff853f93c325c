"""Faults on the proxy's side: a locked database, kill -9, two proxies on one PostgreSQL, retention, privacy.

Each test runs the real proxy process between the openai SDK (or httpx) and the mock upstream.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from harness import ProxyProcess, run_cli, wait_for
from streamtap import read
from streamtap.db.engine import make_engine, upgrade
from streamtap.maintenance import prune
from streamtap.mock_upstream import MockUpstream
from streamtap.records import Outcome, StreamRecord

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    mock = MockUpstream(profile="fast", seed=11)
    mock.start()
    yield mock
    mock.stop()


def all_records(db_url: str, **kwargs: object) -> list[StreamRecord]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return read.get_streams(session, **kwargs)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def stream_once(base_url: str, content: str = "hi", **headers: str) -> str:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="sk-rel", max_retries=0, timeout=30) as c:
        stream = c.chat.completions.create(
            model="mock-fast",
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
        text = "".join((ch.choices[0].delta.content or "") for ch in stream if ch.choices)
    return text


def test_locked_database_does_not_touch_streaming_and_loses_nothing(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'locked.db'}"
    with ProxyProcess(db, tmp_path, upstream=upstream.url, metrics=True) as proxy:
        stream_once(proxy.url)  # warm up: the schema exists, one row
        wait_for(lambda: len(all_records(db, last=10)) == 1, 10)
        locker = sqlite3.connect(tmp_path / "locked.db", timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # the writer cannot write until we let go
        try:
            texts = [stream_once(proxy.url, f"while locked {i}", **{"x-mock-chunks": "5"}) for i in range(10)]
            assert all(texts)  # every client stream went through while the database was locked
            time.sleep(1.0)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        recs = wait_for(
            lambda: (r := all_records(db, last=50)) and len(r) == 11 and r,
            30,
            what="the 10 streams written after the lock was released",
        )
        assert all(r.outcome is Outcome.COMPLETED for r in recs)
        assert "streamtap_recorder_dropped_total 0.0" in proxy.metrics_text()


def test_kill_9_leaves_a_consistent_database(upstream: MockUpstream, tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    db = f"sqlite:///{path}"
    proxy = ProxyProcess(
        db, tmp_path, upstream=upstream.url, metrics=False, extra=["--instance", "p1"]
    ).start()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    with http.stream(
                        "POST",
                        proxy.url + "/v1/chat/completions",
                        json={
                            "model": "mock-fast",
                            "stream": True,
                            "messages": [{"role": "user", "content": "load"}],
                        },
                        headers={"x-mock-chunks": "40", "x-mock-gap-ms": "2"},
                    ) as r:
                        for _ in r.iter_raw():
                            pass
                except httpx.HTTPError:
                    pass

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: (
                sum(r.outcome is Outcome.COMPLETED for r in all_records(db, last=50, with_events=False)) >= 5
            ),
            30,
            what="some streams recorded",
        )
        proxy.stop(signal.SIGKILL)
    finally:
        stop.set()
        for t in threads:
            t.join()

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # every finished row has all its events: nothing half-written is reported complete
        rows = conn.execute(
            "SELECT s.id, s.event_count, (SELECT count(*) FROM stream_events e WHERE e.stream_id = s.id) "
            "FROM streams s WHERE s.outcome NOT IN ('in_progress', 'interrupted')"
        ).fetchall()
        assert rows and all(count == stored for _, count, stored in rows)
    finally:
        conn.close()

    # on restart, what was in flight is marked interrupted
    with ProxyProcess(db, tmp_path, upstream=upstream.url, metrics=False, extra=["--instance", "p1"]):
        outcomes = wait_for(
            lambda: (
                (o := {r.outcome for r in all_records(db, last=10_000, with_events=False)})
                and Outcome.IN_PROGRESS not in o
                and o
            ),
            15,
            what="in-flight rows marked interrupted",
        )
    assert Outcome.INTERRUPTED in outcomes


@pytest.mark.pg
def test_two_proxies_share_one_postgresql(upstream: MockUpstream, pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    engine.dispose()
    with (
        ProxyProcess(
            pg_url, tmp_path, upstream=upstream.url, metrics=False, extra=["--instance", "alpha"]
        ) as a,
        ProxyProcess(
            pg_url, tmp_path, upstream=upstream.url, metrics=False, extra=["--instance", "beta"]
        ) as b,
    ):
        for i in range(3):
            stream_once(a.url, f"a{i}")
            stream_once(b.url, f"b{i}")
        recs = wait_for(lambda: (r := all_records(pg_url, last=100)) and len(r) == 6 and r, 20)
    assert sorted(r.proxy_instance for r in recs) == ["alpha"] * 3 + ["beta"] * 3
    stats = run_cli("stats", "--db", pg_url, "--json")
    assert stats.returncode == 0, stats.stderr
    import json

    s = json.loads(stats.stdout)
    assert s["count"] == 6 and s["outcomes"] == {"completed": 6}


def test_capture_metadata_stores_no_text(upstream: MockUpstream, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'meta.db'}"
    prompt = "my-private-prompt-7731"
    with ProxyProcess(
        db, tmp_path, upstream=upstream.url, metrics=False, extra=["--capture", "metadata"]
    ) as p:
        answer = stream_once(p.url, prompt)
        [rec] = wait_for(lambda: [r for r in all_records(db, last=5) if r.outcome is Outcome.COMPLETED], 10)
    assert answer
    assert rec.usage is not None and rec.ttft_ms is not None and rec.choices[0].finish_reason == "stop"
    assert rec.choices[0].content is None and rec.request_body is None
    assert rec.events and all(e.raw == b"" for e in rec.events)
    pieces = [answer[i : i + 16] for i in range(0, max(1, len(answer) - 16), 8)]
    for path in tmp_path.glob("meta.db*"):
        blob = path.read_bytes()
        assert prompt.encode() not in blob
        found = [piece for piece in pieces if piece.encode() in blob]
        assert not found, f"completion text was stored: {found}"


def test_prune_deletes_old_streams_and_their_events(upstream: MockUpstream, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'prune.db'}"
    with ProxyProcess(db, tmp_path, upstream=upstream.url, metrics=False) as p:
        for i in range(5):
            stream_once(p.url, str(i))
        wait_for(
            lambda: len([r for r in all_records(db, last=10) if r.outcome is Outcome.COMPLETED]) == 5, 10
        )
    engine = make_engine(db)
    try:
        with engine.begin() as conn:
            ids = [r.id for r in all_records(db, last=10)][:3]
            old = datetime.now(UTC) - timedelta(days=10)
            conn.execute(
                sa.text("UPDATE streams SET started_at = :t WHERE id IN (:a, :b, :c)"),
                {"t": old.isoformat(sep=" "), "a": ids[0], "b": ids[1], "c": ids[2]},
            )
        result = run_cli("prune", "--db", db, "--older-than", "7d", "--batch", "2")
        assert result.returncode == 0, result.stderr
        assert "deleted 3 streams" in result.stderr
        left = all_records(db, last=10)
        assert len(left) == 2 and not {r.id for r in left} & set(ids)
        with engine.connect() as conn:
            orphans = conn.execute(
                sa.text("SELECT count(*) FROM stream_events WHERE stream_id NOT IN (SELECT id FROM streams)")
            ).scalar()
        assert orphans == 0
        assert prune(engine, before=datetime.now(UTC) - timedelta(days=1)) == 0
    finally:
        engine.dispose()


def test_automatic_retention_and_no_per_event_rows(upstream: MockUpstream, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'retention.db'}"
    with ProxyProcess(db, tmp_path, upstream=upstream.url, metrics=False, extra=["--keep-events=false"]) as p:
        for i in range(3):
            stream_once(p.url, str(i))
        recs = wait_for(
            lambda: (
                len(r := [x for x in all_records(db, last=10) if x.outcome is Outcome.COMPLETED]) == 3 and r
            ),
            10,
        )
    # per-stream timing is kept, per-event rows are not
    assert all(r.ttft_ms is not None and r.events == () for r in recs)
    engine = make_engine(db)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE streams SET started_at = :t WHERE id = :id"),
                {"t": (datetime.now(UTC) - timedelta(days=30)).isoformat(sep=" "), "id": recs[0].id},
            )
    finally:
        engine.dispose()
    with ProxyProcess(db, tmp_path, upstream=upstream.url, metrics=False, extra=["--retention", "7d"]):
        left = wait_for(
            lambda: len(r := all_records(db, last=10)) == 2 and r, 15, what="the old stream pruned"
        )
    assert recs[0].id not in {r.id for r in left}
