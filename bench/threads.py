"""`python -m bench.threads [--variant NAME=SRC]... [--streams 200] [--gap-ms 5]`: CPU per event, by thread.

Where a recording proxy's CPU goes, next to bare mitmproxy's: each path (bare mitmproxy, then every
variant as in `bench.ab`) carries the same load in interleaved rounds, and the CPU time of each of its
threads (the proxy's event loop, streamtap's sender thread, the worker's main and writer threads, ...)
is read from /proc before and after, and once more after the worker has caught up. Printed per event
forwarded, the minimum over the rounds (the least disturbed), with the total. Threads are named as the
kernel knows them: Python 3.12 does not name its threads there, so streamtap's sender thread shows as
"proxy: python" and the worker's writer as "worker: python" (the worker's metrics server idles).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from . import latency as lat
from .ab import _env, _variants
from .capacity import _catch_up
from .load import run_load
from .procs import BareMitmproxy, StreamtapProxy, harness, tasks
from .stats import fmt, table


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of every live thread of `pid` and its descendants, by role: 'proxy: main', ..."""
    out: dict[str, float] = defaultdict(float)
    for i, main, task in tasks(pid):
        try:
            with open(f"{task}/comm") as f:
                name = f.read().strip()
            with open(f"{task}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        out[f"{'proxy' if i == 0 else 'worker'}: {'main' if main else name}"] += ns / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=SRC (empty SRC: this tree)")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--series", action="store_true", help="also print every round (to see a drift)")
    args = parser.parse_args(argv)
    variants = _variants(args.variant or ["streamtap="])

    with harness("streamtap-threads-") as h:
        mock, procs = h.mock, h.procs
        procs.append(BareMitmproxy(mock.url, h.workdir, cpu=h.proxy_cpu))
        for name, src in variants.items():
            db = f"sqlite:///{h.workdir}/{name}.db"
            procs.append(StreamtapProxy(mock.url, h.workdir, db, h.proxy_cpu, _env(src), name=name))
        for p in procs:
            p.launch()
        for p in procs:
            p.wait_up()
        paths = [lat.Path(p.name, p.url, p.pid, recorded=getattr(p, "recorded", None)) for p in procs]
        lat.warm_up(mock, paths)
        # per path: per round, {thread: µs per event}
        runs: dict[str, list[dict[str, float]]] = {p.name: [] for p in paths}
        for rnd in range(args.rounds):
            order = paths[rnd % len(paths) :] + paths[: rnd % len(paths)]
            for path in order:
                assert path.pid is not None
                before = path.recorded() if path.recorded is not None else 0.0
                t0 = thread_seconds(path.pid)
                load = run_load(
                    url=path.url,
                    request=path.request(chunks=args.chunks, gap_ms=args.gap_ms, ttft_ms=0),
                    concurrency=args.streams,
                    duration=args.seconds,
                    stagger=args.chunks * args.gap_ms / 1000,
                )
                if path.recorded is not None:
                    _catch_up(path, before, len(load.results))
                t1 = thread_seconds(path.pid)
                events = sum(len(r.events) for r in load.results)
                runs[path.name].append(
                    {k: (t1[k] - t0.get(k, 0.0)) / events * 1e6 for k in t1} if events else {}
                )
                mock.clear()
                time.sleep(0.3)
        print(
            f"CPU per event (µs) by thread, minimum of {args.rounds} rounds; {args.streams} streams of "
            f"{args.chunks} events, {args.gap_ms:g} ms gaps ({args.streams * 1000 / args.gap_ms:,.0f} "
            "events/s offered)\n"
        )
        names = sorted({k for rs in runs.values() for r in rs for k in r})
        rows = []
        for k in names:
            cells = []
            for p in paths:
                vals = [r[k] for r in runs[p.name] if k in r]
                cells.append(fmt(min(vals), 2) if vals and max(vals) >= 0.01 else "-")
            rows.append([k, *cells])
        totals = [min(sum(r.values()) for r in runs[p.name]) for p in paths]
        rows.append(["total", *(fmt(t, 2) for t in totals)])
        rows.append(["total / bare", *(f"{t / totals[0]:.3f}x" for t in totals)])
        print(table(["thread", *(p.name for p in paths)], rows))
        if args.series:
            print("\nevery round, in order (total µs per event; each thread's in brackets)\n")
            for p in paths:
                print(f"- {p.name}:")
                for i, r in enumerate(runs[p.name]):
                    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.items()) if v >= 0.01)
                    print(f"  {i + 1:3d}. {sum(r.values()):.2f} ({parts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
