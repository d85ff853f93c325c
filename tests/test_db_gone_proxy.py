"""Issue 5 through the real proxy process: the database goes away while traffic flows.

A SQLite file deleted, a SQLite file made read-only, a PostgreSQL server stopped (a throwaway cluster of the
test's own, never the machine's shared one). In every case each client stream completes with the upstream's
exact answer, and recording resumes once the database is back; with a small queue, the drops are exact.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from db_faults import pg_cluster, read_only
from harness import ProxyProcess, wait_for
from streamtap import read
from streamtap.db.engine import make_engine
from streamtap.mock_upstream import MockUpstream
from streamtap.records import Outcome, StreamRecord

pytestmark = pytest.mark.slow

QUEUE = 6  # --set streamtap_queue_size: small, so an outage of a few streams overflows it


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    mock = MockUpstream(profile="fast", seed=5)
    mock.start()
    yield mock
    mock.stop()


@dataclass(frozen=True, slots=True)
class Sent:
    """One client stream: its marker (in the prompt), when it was sent, and the bytes the client got."""

    marker: str
    sent_at: float
    body: bytes
    completion_id: str


def stream(base_url: str, marker: str, chunks: int = 6) -> Sent:
    sent_at = time.monotonic()
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST",
            base_url + "/v1/chat/completions",
            json={"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": marker}]},
            headers={"authorization": "Bearer sk-gone", "x-mock-chunks": str(chunks), "x-mock-gap-ms": "5"},
        ) as r,
    ):
        assert r.status_code == 200
        body = b"".join(r.iter_raw())
        return Sent(marker, sent_at, body, r.headers["x-mock-completion-id"])


def assert_whole(upstream: MockUpstream, sent: Sent) -> None:
    """The client got the upstream's whole answer: every content delta, then [DONE]."""
    assert sent.body.endswith(b"data: [DONE]\n\n"), sent.body[-200:]
    text = ""
    for line in sent.body.split(b"\n"):
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            text += "".join((c.get("delta") or {}).get("content") or "" for c in chunk["choices"])
    assert text and text == upstream.wait_finished(sent.completion_id).content[0]


def records(url: str) -> dict[str, StreamRecord]:
    """The finished records of a database, by the marker in their prompt."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            recs = read.get_streams(session, last=10_000)
    finally:
        engine.dispose()
    found = {}
    for rec in recs:
        marker = re.search(r"<[^<>]+>", rec.request_body or "")
        if marker and rec.outcome is not Outcome.IN_PROGRESS:
            found[marker.group()] = rec
    return found


def records_having(url: str, *markers: str) -> dict[str, StreamRecord]:
    """The finished records once those of all `markers` are among them; until then, none."""
    found = records(url)
    return found if found.keys() >= set(markers) else {}


def assert_recorded(rec: StreamRecord, sent: Sent) -> None:
    assert rec.outcome is Outcome.COMPLETED
    assert b"".join(e.raw for e in rec.events) == sent.body  # byte for byte what the client got


class Traffic:
    """Client threads streaming through the proxy, one after another each, until stopped."""

    def __init__(self, base_url: str, threads: int = 4) -> None:
        self.done: list[Sent] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(base_url, i), daemon=True) for i in range(threads)
        ]

    def _loop(self, base_url: str, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self.done.append(stream(base_url, f"<t{i}:{n}>"))
            except BaseException as e:
                self.errors.append(e)
                return

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_sqlite_file_deleted_mid_traffic(upstream: MockUpstream, tmp_path: Path) -> None:
    path = tmp_path / "data" / "streamtap.db"
    url = f"sqlite:///{path}"
    with ProxyProcess(url, tmp_path, upstream=upstream.url) as proxy:
        warm = stream(proxy.url, "<warm>")
        wait_for(lambda: "<warm>" in records(url), 20, what="the warm-up stream recorded")
        with Traffic(proxy.url) as traffic:
            wait_for(lambda: len(traffic.done) >= 8 or traffic.errors, 60, what="traffic")
            for suffix in ("", "-wal", "-shm"):  # rm streamtap.db*
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            deleted_at = time.monotonic()
            wait_for(
                lambda: sum(s.sent_at > deleted_at for s in traffic.done) >= 12 or traffic.errors,
                60,
                what="traffic after the deletion",
            )
        assert not traffic.errors
        sent = [warm, *traffic.done]
        for s in sent:
            assert_whole(upstream, s)
        after = {s.marker: s for s in traffic.done if s.sent_at > deleted_at}
        found = wait_for(
            lambda: records_having(url, *after),
            30,
            what="every stream sent after the deletion, in the new file",
        )
        for marker, s in after.items():
            assert_recorded(found[marker], s)
        assert "<warm>" not in found  # a new file: what the deleted one held is gone with it
        assert "is gone; creating a new one" in proxy.output()
        assert proxy.metric("streamtap_recorder_dropped_total") == 0


def outage(
    proxy: ProxyProcess,
    upstream: MockUpstream,
    url: str,
    take_away: Callable[[], object],
    bring_back: Callable[[], object],
    *,
    readable_meanwhile: bool,
    streams: int = 10,
) -> None:
    """Streams while the database is away: all complete, the queue drops exactly what overflowed it (the
    oldest), and what it kept is written once the database is back."""
    warm = stream(proxy.url, "<warm>")
    wait_for(lambda: "<warm>" in records(url), 20, what="the warm-up stream recorded")
    log_from = len(proxy.output())
    take_away()
    try:
        sent = [stream(proxy.url, f"<out:{i}>", chunks=3) for i in range(streams)]
        for s in [warm, *sent]:
            assert_whole(upstream, s)
        # The writer holds the batch it took when writing first failed and retries it; every item (one
        # start and one record per stream) arriving after that goes through the queue, which keeps QUEUE.
        first = wait_for(
            lambda: re.search(r"cannot write (\d+) items", proxy.output()[log_from:]), 60, what="a retry"
        )
        assert first is not None
        held = int(first.group(1))
        expected = 2 * streams - held - QUEUE
        assert expected > 0
        wait_for(
            lambda: proxy.metric("streamtap_recorder_dropped_total") == expected,
            30,
            what=f"{expected} drops",
        )
        if readable_meanwhile:
            assert records(url).keys() == {"<warm>"}
    finally:
        bring_back()
    # Until the writer's next attempt (its backoff is up to 5 s) the queue is still full: wait for it.
    wait_for(lambda: proxy.metric("streamtap_recorder_queue_depth") == 0, 60, what="the queue drained")
    more = stream(proxy.url, "<back>")
    # The queue is first in, first out: once <back> is written, so is everything kept before it.
    found = wait_for(lambda: records_having(url, "<back>"), 60, what="recording resumed")
    assert_recorded(found["<back>"], more)
    kept = {s.marker: s for s in sent if s.marker in found}
    assert sent[-1].marker in kept  # the oldest were dropped, not the newest
    for marker, s in kept.items():
        assert_recorded(found[marker], s)
    wait_for(
        lambda: proxy.metric("streamtap_recorder_written_total") == 2 + len(kept),
        30,
        what="the written count to match the database",
    )
    assert proxy.metric("streamtap_recorder_dropped_total") == expected


def test_sqlite_read_only_mid_traffic(upstream: MockUpstream, tmp_path: Path) -> None:
    path = tmp_path / "streamtap.db"
    url = f"sqlite:///{path}"
    extra = ["--set", f"streamtap_queue_size={QUEUE}"]
    with ProxyProcess(url, tmp_path, upstream=upstream.url, extra=extra) as proxy, ExitStack() as stack:
        outage(
            proxy,
            upstream,
            url,
            lambda: stack.enter_context(read_only(path)),
            stack.close,
            readable_meanwhile=True,
        )
        log = proxy.output()
    assert "is read-only" in log and "writable again" in log


@pytest.mark.pg
def test_postgresql_stopped_mid_traffic(upstream: MockUpstream, tmp_path: Path) -> None:
    with pg_cluster() as cluster:
        extra = ["--set", f"streamtap_queue_size={QUEUE}"]
        with ProxyProcess(cluster.url, tmp_path, upstream=upstream.url, extra=extra) as proxy:
            outage(proxy, upstream, cluster.url, cluster.stop, cluster.start, readable_meanwhile=False)
            log = proxy.output()
    assert "writable again" in log
