"""`python -m bench.worker_loop [--streams N]`: the worker's CPU per event in a tight loop, no proxy.

Builds the messages the proxy would send for N chat streams (a role chunk, 50 content chunks, a finish
chunk, a usage chunk and `[DONE]`, one network read each, 200 streams interleaved at a time), serializes them
in frames of 5,000 as the channel does, and times `Worker.pipeline.handle` over the frames read back, with the
real recorder writing to a fresh SQLite file. Prints CPU µs per event (all threads of this process) for the
whole worker, without the event rows (`--no-keep-events`: one row per stream, none per event), without the
metrics, and without recording or metrics (unpickling, SSE, interpretation). Run
it with PYTHONPATH=SRC to measure another source tree; the figures move ±5% between runs (±15% on a noisy
machine: alternate the trees and take minima).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import sys
import tempfile
import time
import uuid
from typing import Any

TOKENS = 50
AT_ONCE = 200


def _chunks(i: int) -> list[bytes]:
    head = {
        "id": f"chatcmpl-{i:08d}",
        "object": "chat.completion.chunk",
        "created": 1732400000,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_1234",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + json.dumps({**head, "choices": [choice]}, separators=(",", ":")).encode() + b"\n\n"

    usage = {"prompt_tokens": 10, "completion_tokens": TOKENS, "total_tokens": TOKENS + 10}
    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": f" tok{k}"}) for k in range(TOKENS)),
        chunk({}, "stop"),
        b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n",
        b"data: [DONE]\n\n",
    ]


def messages(streams: int) -> list[tuple[Any, ...]]:
    from streamtap import pipeline as p

    t = time.monotonic()
    body = json.dumps(
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    out: list[tuple[Any, ...]] = []
    for base in range(0, streams, AT_ONCE):
        ids = range(base, min(base + AT_ONCE, streams))
        reads = {i: _chunks(i) for i in ids}
        key = {i: uuid.uuid4().hex for i in ids}  # the proxy's keys, as its addon makes them
        for i in ids:
            path = "/v1/chat/completions"
            start = (p.START, key[i], t, time.time(), "POST", "http://127.0.0.1" + path, "127.0.0.1", path)
            out.append((*start, None, body.encode()))
            out.append((p.HEADERS, key[i], t, 200, "text/event-stream", None))
        for j in range(TOKENS + 4):
            for i in ids:
                t += 0.00001
                out.append((p.CHUNK, key[i], t, reads[i][j]))
        for i in ids:
            out.append((p.CHUNK, key[i], t, b""))
            out.append((p.END, key[i], t, None, None))
    return out


def run(streams: int, *, record: bool, metrics: bool, keep_events: bool = True) -> float:
    """CPU µs per event for one pass (the recorder's writing included, up to its last commit)."""
    from streamtap import worker as w
    from streamtap.worker import Worker, frame, read_frame

    msgs = messages(streams)
    frames = [frame(msgs[i : i + 5000]) for i in range(0, len(msgs), 5000)]
    with tempfile.TemporaryDirectory(prefix="streamtap-worker-loop-") as tmp:
        config = {
            "instance": "bench",
            "metrics_port": 0,
            "metrics_host": "127.0.0.1",
            "db": f"sqlite:///{tmp}/w.db",
            "retention": None,
            "queue_size": 100_000,
            "keep_events": keep_events,
            "max_models": 50,
            "capture": "full",
        }
        worker = Worker(config)
        pipeline = worker.pipeline
        if not record:
            pipeline.on_start = pipeline.on_record = None
        if not metrics:
            pipeline.metrics = None
        gc.freeze()  # as the worker's main() does once it is set up
        threshold = gc.get_threshold()
        gc.set_threshold(*getattr(w, "GC_THRESHOLD", threshold))  # (a tree from before it had one)
        cpu0 = time.process_time()
        for data in frames:
            pipeline.handle(read_frame(io.BytesIO(data)))
        worker.close()  # waits for the recorder's last commit
        gc.set_threshold(*threshold)
        gc.unfreeze()
        return (time.process_time() - cpu0) / (streams * (TOKENS + 4)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    for label, record, metrics, keep_events in (
        ("whole worker (SQLite)", True, True, True),
        ("without event rows", True, True, False),
        ("without metrics", True, False, True),
        ("without recording or metrics", False, False, True),
    ):
        runs = sorted(
            run(args.streams, record=record, metrics=metrics, keep_events=keep_events)
            for _ in range(args.runs)
        )
        print(
            f"{label:32} {runs[len(runs) // 2]:5.1f} µs/event (runs: {', '.join(f'{r:.1f}' for r in runs)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
