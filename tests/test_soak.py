"""Soak: 500 streams open at once through one proxy process for about a minute.

Every stream lasts ~5 s (20 events 250 ms apart) and is followed at once by the next on a fresh connection,
so 500 are in flight the whole time and ~6,000 pass through. Afterwards: every stream arrived whole and as
sent, every one is recorded `completed` with all its events, the proxy counted no drops and no tap errors,
and its memory (the proxy and any process it started) did not grow between ~20 s and the end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    ClientStream,
    ProxyProcess,
    finished_by_prompt,
    metric_sum,
    process_tree_rss,
    stream_sse,
    wait_for,
)
from streamtap.mock_upstream import LOG_LIMIT, MockUpstream

pytestmark = pytest.mark.slow

CONCURRENCY = 500
CHUNKS, GAP_MS, TTFT_MS = 20, 250, 100
STREAM_SECONDS = (TTFT_MS + (CHUNKS + 1) * GAP_MS) / 1000  # content chunks and the finish chunk
LOAD_FOR = 57.0  # seconds during which streams are (re)started; the last ones end ~STREAM_SECONDS later
EARLY, LATE = 20.0, LOAD_FOR - 1  # when RSS is compared: warmed up, and just before the load stops
SAMPLE_EVERY = 5.0
MAX_GROWTH = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream(profile="fast", seed=3) as mock:
        yield mock


def _content(body: bytes) -> str:
    """The first choice's content, reassembled from the chat-completion chunks of an SSE body."""
    text = []
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: {"):
            choices = json.loads(event[6:])["choices"]
            if choices:
                text.append(choices[0]["delta"].get("content") or "")
    return "".join(text)


def test_500_concurrent_streams_for_a_minute(upstream: MockUpstream, tmp_path: Path) -> None:
    path = tmp_path / "soak.db"
    with ProxyProcess(f"sqlite:///{path}", tmp_path, upstream=upstream.url) as proxy:
        assert proxy.proc is not None
        pid = proxy.proc.pid
        done: list[tuple[str, ClientStream]] = []
        errors: list[str] = []
        inflight: dict[str, ClientStream] = {}
        samples: list[
            tuple[float, int, int]
        ] = []  # (due at, in seconds into the load; RSS bytes; streams receiving)
        headers = {"x-mock-chunks": str(CHUNKS), "x-mock-gap-ms": str(GAP_MS), "x-mock-ttft-ms": str(TTFT_MS)}

        async def client(worker: int, start: float, delay: float) -> None:
            await asyncio.sleep(delay)  # spread over one stream's length, so streams end evenly too
            n = 0
            while time.monotonic() < start + LOAD_FOR:
                tag = f"soak-{worker}-{n}"
                n += 1
                res = inflight[tag] = ClientStream()
                payload = {
                    "model": "mock-soak",
                    "stream": True,
                    "messages": [{"role": "user", "content": tag}],
                }
                try:
                    async with asyncio.timeout(60):
                        await stream_sse(proxy.port, payload, headers, result=res)
                except (OSError, EOFError, ValueError, TimeoutError) as e:  # EOFError: IncompleteReadError
                    errors.append(f"{tag}: {e!r}")
                finally:
                    del inflight[tag]
                done.append((tag, res))

        async def sampler(start: float) -> None:
            for at in sorted({*range(int(SAMPLE_EVERY), int(LOAD_FOR), int(SAMPLE_EVERY)), EARLY, LATE}):
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                receiving = sum(1 for r in list(inflight.values()) if r.event_times)
                samples.append((at, process_tree_rss(pid), receiving))

        async def main() -> float:
            start = time.monotonic()
            rng = random.Random(7)
            await asyncio.gather(
                sampler(start),
                *(client(w, start, rng.uniform(0, STREAM_SECONDS)) for w in range(CONCURRENCY)),
            )
            return time.monotonic() - start

        took = asyncio.run(main())
        by_time = {at: rss for at, rss, _ in samples}
        print(
            f"\n{len(done)} streams in {took:.1f} s; at: RSS of the proxy's process tree, streams receiving"
        )
        print("  ".join(f"{t:.0f}s {rss / 2**20:.1f}MB {receiving}" for t, rss, receiving in samples))

        # every stream arrived whole, and as the upstream sent it
        assert not errors, f"{len(errors)} streams failed: {errors[:5]}"
        assert len(done) < LOG_LIMIT  # the mock still holds every send log
        for tag, res in done:
            assert res.status == 200 and res.complete, tag
            assert res.body.endswith(b"data: [DONE]\n\n"), tag
            sent = upstream.wait_finished(res.headers["x-mock-completion-id"])
            assert len(res.event_times) == len(sent.sends), f"{tag}: {len(res.event_times)} events"
            assert _content(bytes(res.body)) == sent.content[0], tag

        # 500 at once, really: the most streams mid-body (first to last event) at one moment
        ends = sorted(
            (t, step) for _, res in done for t, step in ((res.event_times[0], 1), (res.event_times[-1], -1))
        )
        peak = max(itertools.accumulate(step for _, step in ends))
        print(f"at most {peak} streams mid-body at once")
        assert peak >= CONCURRENCY * 0.9

        # every stream recorded, completed, with all its events
        expected = {tag for tag, _ in done}
        wait_for(
            lambda: finished_by_prompt(path).keys() >= expected, 60, interval=1, what="every stream recorded"
        )
        rows = finished_by_prompt(path)
        assert rows.keys() == expected
        outcomes = [outcome for outcome, _ in rows.values()]
        assert set(outcomes) == {"completed"}, {o: outcomes.count(o) for o in set(outcomes)}
        events = {tag: len(res.event_times) for tag, res in done}
        assert all(rows[tag][1] == count for tag, count in events.items())

        metrics = proxy.metrics_text()
        assert metric_sum(metrics, "streamtap_recorder_dropped_total") == 0
        assert metric_sum(metrics, "streamtap_tap_errors_total") == 0
        assert metric_sum(metrics, "streamtap_streams_total", outcome="completed") == len(done)

        # memory flat: warmed up at EARLY, the same at LATE
        early, late = by_time[EARLY], by_time[LATE]
        print(f"RSS at {EARLY:.0f} s {early / 2**20:.1f} MB, at {LATE:.0f} s {late / 2**20:.1f} MB")
        assert late - early < MAX_GROWTH, f"RSS grew {(late - early) / 2**20:.1f} MB under a steady load"
