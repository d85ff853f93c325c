"""`python -m bench.ab --variant base=/tmp/base/src --variant new=/tmp/new/src`: before/after of a patch.

Each variant is a streamtap source tree (e.g. `git archive HEAD` unpacked, with or without a patch applied)
run as its own proxy process (PYTHONPATH=SRC). The paths are measured in interleaved, rotating rounds so
that the noise of a shared machine falls on all of them alike: per-event latency and proxy CPU per event
at N streams, what each variant recorded against the upstream's log, and optionally the recorder's
throughput (a subprocess per variant, alternating) and the capacity ramp.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import capacity as cap
from . import latency as lat
from .procs import REPO, BareMitmproxy, Foreign, StreamtapProxy, harness
from .stats import fmt, summary, table


def _variants(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, _, src = spec.partition("=")
        out[name] = str(Path(src).resolve()) if src else ""
    return out


def _env(src: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([src, str(REPO)])} if src else {}


def recorder_runs(variants: dict[str, str], kind: str, streams: int, rounds: int) -> dict[str, list[float]]:
    """Recorder throughput (events/s) of each variant, alternating, `rounds` times each."""
    out: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(rounds):
        for name, src in variants.items():
            env = dict(os.environ, **_env(src))
            code = (
                "import json, tempfile, pathlib, sys\n"
                "from bench import recorder_bench as rb\n"
                f"with rb.database({kind!r}, pathlib.Path(tempfile.mkdtemp())) as url:\n"
                "    if url is None: print('null'); sys.exit()\n"
                f"    t = rb.throughput(url, {streams})\n"
                "    print(json.dumps(t.events_per_s if not t.dropped else -1))\n"
            )
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
            )
            value = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
            if value is None:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            out[name].append(float(value))
    return out


def _probe_rows(paths: list[lat.Path], probes: dict[str, dict[str, list[Any]]]) -> list[list[str]]:
    """Event-loop lag (how late a 5 ms timer fired) and GC pauses, inside each proxy, over the run."""
    rows = []
    lag = {n: summary([x * 1000 for x in p["lags"]]) for n, p in probes.items()}
    for label, key in (
        ("loop lag p99 (ms)", "p99"),
        ("loop lag p99.9 (ms)", "p99.9"),
        ("loop lag max (ms)", "max"),
    ):
        rows.append([label, *(fmt(lag[p.name][key]) if p.name in lag else "-" for p in paths)])
    for gen in (0, 1, 2):
        cells = []
        for p in paths:
            pauses = [d * 1000 for g, d in probes.get(p.name, {}).get("gc", []) if g == gen]
            cells.append(f"{len(pauses)} × ≤{max(pauses):.1f}, Σ{sum(pauses):.0f}" if pauses else "-")
        rows.append([f"GC gen{gen} collections (ms)", *cells])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=SRC (empty SRC: this tree)")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="per path per round")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--no-bare", action="store_true")
    parser.add_argument("--capacity", action="store_true", help="also ramp each variant to its capacity")
    parser.add_argument(
        "--probe", action="store_true", help="load bench/probe_addon.py: event-loop lag and GC pauses"
    )
    parser.add_argument("--recorder", type=int, default=0, help="recorder throughput rounds per variant")
    parser.add_argument("--recorder-db", default="sqlite", choices=["sqlite", "postgresql"])
    args = parser.parse_args(argv)
    variants = _variants(args.variant)
    if not variants:
        parser.error("give at least one --variant NAME=SRC")

    if args.recorder:
        runs = recorder_runs(variants, args.recorder_db, 1000, args.recorder)
        rows = [[n, ", ".join(f"{v:,.0f}" for v in vs), fmt(summary(vs)["p50"], 0)] for n, vs in runs.items()]
        print(table([f"variant: recorder into {args.recorder_db}", "events/s per run", "median"], rows))
        print()
    if args.rounds <= 0:
        return 0

    cfg = lat.LatencyConfig(
        levels=(args.streams,),
        chunks=args.chunks,
        duration={args.streams: args.seconds * args.rounds},
        rounds=args.rounds,
    )
    with harness("streamtap-ab-") as h:
        workdir, mock, procs, proxy_cpu = h.workdir, h.mock, h.procs, h.proxy_cpu
        if not args.no_bare:
            procs.append(BareMitmproxy(mock.url, workdir, cpu=proxy_cpu))
        dbs = {}
        for name, src in variants.items():
            dbs[name] = f"sqlite:///{workdir}/{name}.db"
            procs.append(StreamtapProxy(mock.url, workdir, dbs[name], proxy_cpu, _env(src), name=name))
        for p in procs:
            if args.probe:
                p.enable_probe()
            p.launch()
        for p in procs:
            p.wait_up()
        paths = [lat.Path(p.name, p.url, p.pid) for p in procs]
        lat.warm_up(mock, paths)
        since = lat.now_utc()
        noise = Foreign([mock.pid, *(p.pid for p in procs)])
        t0 = time.monotonic()
        if args.probe:
            for p in procs:
                p.probe_start()
        samples = lat.measure(mock, paths, cfg)[args.streams]
        probes = {p.name: p.probe_read() for p in procs} if args.probe else {}
        share = noise.share()
        print(
            f"{args.rounds} interleaved rounds x {args.seconds:g}s per path at {args.streams} streams "
            f"({time.monotonic() - t0:.0f}s); other processes used {share * 100:.0f}% of the machine "
            "meanwhile\n"
        )
        stats = {n: lat.summarize(s) for n, s in samples.items()}
        recorded = {}
        for name in variants:
            lat.wait_recorded(dbs[name], since, samples[name].streams)
            recorded[name] = lat.recorded_errors(dbs[name], samples[name].entries, since)
        keys = [
            ("event latency p50 (ms)", "lat_p50", 3),
            ("event latency p99 (ms)", "lat_p99", 3),
            ("event latency p99.9 (ms)", "lat_p99.9", 3),
            ("longest stall (ms)", "lat_max", 3),
            ("added TTFT p50 (ms)", "ttft_p50", 3),
            ("added TTFT p99 (ms)", "ttft_p99", 3),
            ("proxy CPU per event (µs)", "cpu_us_per_event", 1),
            ("events", "events", 0),
        ]
        rows = [[label, *(fmt(stats[p.name][key], d) for p in paths)] for label, key, d in keys]
        for label, key, p in (
            ("recorded TTFT error p50 (ms)", "ttft_err_ms", 50),
            ("recorded TTFT error p99 (ms)", "ttft_err_ms", 99),
            ("|recorded gap error| p99 (ms)", "gap_err_ms", 99),
        ):
            cells = []
            for path in paths:
                rec = recorded.get(path.name)
                cells.append(fmt(summary(rec[key])[f"p{p}"]) if rec and rec[key] else "-")
            rows.append([label, *cells])
        if probes:
            rows += _probe_rows(paths, probes)
        print(table(["figure", *(p.name for p in paths)], rows))
        if args.capacity:
            print()
            ramps = list(cap.ramps(mock, paths, cap.CapacityConfig()).values())
            cap_rows = []
            for r in ramps:
                best = r.capacity
                levels = ", ".join(
                    f"{lv.concurrency}→{lv.delivered:.0f} ({lv.growth * 100:+.0f}%)" for lv in r.levels
                )
                cpu = fmt(best.cpu_us_per_event, 1) if best else "-"
                delivered = (
                    (f"≥ {best.delivered:.0f}" if r.capped else f"{best.delivered:.0f}") if best else "-"
                )
                cap_rows.append([r.path, delivered, cpu, fmt(r.cpu_bound, 0), levels])
            header = ["path", "capacity (ev/s)", "CPU per event there (µs)", "events/s per CPU", "levels"]
            print(table(header, cap_rows))
        notes = [(p.name, line) for p in procs for line in p.output().splitlines() if "streamtap:" in line]
        if notes:  # the worker's priority changes, drops, tap errors: what the figures above may owe to them
            print("\nwhat the proxies said:")
            for name, line in notes:
                print(f"  {name}: {line.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
