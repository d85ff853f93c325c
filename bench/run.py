"""`python -m bench.run --quick|--full [--peers]`: streamtap against a direct connection and bare mitmproxy.

Everything binds to 127.0.0.1 and stops by itself. On a machine with two or more CPUs the proxy under
test runs alone on CPU 1 (`taskset -c 1`); the mock upstream (its own process) and this load client share
CPU 0. `--full` writes bench/results.md; `--quick` prints the ratios only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import capacity as cap
from . import latency as lat
from . import recorder_bench as rb
from .mock_proc import MockProcess
from .peers import LiteLLMProxy, ensure_litellm
from .procs import (
    BENCH,
    BareMitmproxy,
    Foreign,
    Proc,
    StreamtapProxy,
    calibrate,
    harness,
    machine,
    split_cpus,
)
from .report import Results, render, render_quick


@dataclass
class Mode:
    name: str
    latency: lat.LatencyConfig
    capacity: cap.CapacityConfig
    recorder_streams: int
    recorder_runs: int
    sustain_s: float
    memory: tuple[int, int]
    memory_bare: bool
    dashboard_timeout: float
    dashboard_args: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Mode(
    "quick",
    lat.LatencyConfig(chunks=20, duration={1: 1.2, 50: 1.0, 200: 1.0}, rounds=1),
    cap.CapacityConfig(chunks=50, levels=(40, 100, 160), duration=1.0, warmup=0.25, top_repeats=0),
    recorder_streams=300,
    recorder_runs=1,
    sustain_s=5.0,
    memory=(100, 1000),
    memory_bare=False,
    dashboard_timeout=20,
    dashboard_args=("--streams", "5000", "--repeat", "1", "--no-baseline"),
)
FULL = Mode(
    "full",
    # 50 streams carries the targets: 8 rounds of 3 s per path, so a burst of noise on the shared machine
    # falls on every path alike instead of on one path's single round
    lat.LatencyConfig(chunks=50, duration={1: 10.0, 50: 24.0, 200: 6.0}, rounds=2, level_rounds={50: 8}),
    cap.CapacityConfig(chunks=100, duration=3.0),
    recorder_streams=2000,
    recorder_runs=3,
    sustain_s=60.0,
    memory=(1000, 10000),
    memory_bare=True,
    dashboard_timeout=240,
)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small scale, under a minute, ratios only")
    size.add_argument("--full", action="store_true", help="the full run (default), writes bench/results.md")
    parser.add_argument("--peers", action="store_true", help="add the LiteLLM proxy as a fourth path")
    parser.add_argument("--out", type=Path, help="where the markdown goes [full: bench/results.md]")
    parser.add_argument("--skip", default="", help="comma-separated measures to skip (1-7), for development")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out = args.out if args.out else (BENCH / "results.md" if mode is FULL else None)

    began = time.monotonic()
    client_cpus, proxy_cpu = split_cpus()
    res = Results(mode=mode.name, date=datetime.now(UTC), machine=machine(), load_before=os.getloadavg())
    res.notes.append(
        f"calibration: {calibrate(proxy_cpu):.1f} ms for a fixed Python workload (`procs.calibrate`) on the "
        "proxy's CPU; machines here differ up to 2x in speed, so compare runs by it"
    )
    res.notes.append(
        f"pinning: proxy on CPU {proxy_cpu}, mock and client on CPU {sorted(client_cpus)}"
        if client_cpus
        else "pinning: none (fewer than 2 CPUs)"
    )
    with harness("streamtap-bench-") as h:
        _run(mode, args.peers, skip, res, h.mock, h.procs, h.workdir, proxy_cpu, client_cpus)
    res.load_after = os.getloadavg()
    res.seconds = time.monotonic() - began
    text = render_quick(res) if mode is QUICK else render(res)
    print(text)
    if out is not None:
        out.write_text(render(res) + "\n")
        _log(f"wrote {out}")
    return 0


def _run(
    mode: Mode,
    peers: bool,
    skip: set[str],
    res: Results,
    mock: MockProcess,
    procs: list[Proc],
    workdir: Path,
    proxy_cpu: int | None,
    client_cpus: set[int] | None,
) -> None:
    cfg = mode.latency
    db = f"sqlite:///{workdir}/streamtap.db"
    bare = BareMitmproxy(mock.url, workdir, cpu=proxy_cpu).launch()
    tap = StreamtapProxy(mock.url, workdir, db, cpu=proxy_cpu).launch()
    procs += [bare, tap]
    mem_procs: list[Proc] = []
    if "5" not in skip:
        mem_procs.append(StreamtapProxy(mock.url, workdir, f"sqlite:///{workdir}/memory.db", cpu=proxy_cpu))
        if mode.memory_bare:
            mem_procs.append(BareMitmproxy(mock.url, workdir, cpu=proxy_cpu))
        procs += [p.launch() for p in mem_procs]
    litellm: LiteLLMProxy | None = None
    if peers:
        exe, info = ensure_litellm(workdir / "litellm-install.log")
        if exe is None:
            res.litellm = f"not available ({info})"
        else:
            res.litellm = info
            headers = {
                "x-mock-chunks": str(cfg.chunks),
                "x-mock-gap-ms": f"{cfg.gap_ms:g}",
                "x-mock-ttft-ms": f"{cfg.ttft_ms:g}",
            }
            litellm = LiteLLMProxy(exe, mock.url, workdir, headers, cpu=proxy_cpu)
            procs.append(litellm.launch())
    for p in procs:
        p.wait_up(120 if p is litellm else 60)
    res.notes.append(
        f"checked: streamtap may run on CPUs {sorted(os.sched_getaffinity(tap.pid))}, bare mitmproxy on "
        f"{sorted(os.sched_getaffinity(bare.pid))}, the mock on {sorted(os.sched_getaffinity(mock.pid))}"
    )
    paths = [
        lat.Path("direct", mock.url),
        lat.Path("bare", bare.url, bare.pid),
        lat.Path("streamtap", tap.url, tap.pid, recorded=tap.recorded),
    ]
    if litellm is not None:
        paths.append(
            lat.Path(
                "litellm",
                litellm.url,
                litellm.pid,
                {"authorization": f"Bearer {litellm.master_key}"},
                reframes=True,
            )
        )
    _log(f"processes up; warming up {', '.join(p.name for p in paths)}")
    lat.warm_up(mock, paths)
    for path in paths:
        res.unchanged[path.name] = lat.bytes_unchanged(mock, path)

    if "1" not in skip:
        _log("measure 1: latency per event at " + ", ".join(map(str, cfg.levels)) + " streams")
        since = lat.now_utc()
        noise = Foreign([mock.pid, *(p.pid for p in procs)])
        res.latency = lat.measure(mock, paths, cfg)
        res.foreign["1"] = noise.share()
        if "2" not in skip:
            _log("measure 2: recorded timings against the upstream's")
            expected = sum(s.streams for s in (res.latency[c]["streamtap"] for c in cfg.levels))
            lat.wait_recorded(db, since, expected)
            for c in cfg.levels:
                res.recorded[c] = lat.recorded_errors(db, res.latency[c]["streamtap"].entries, since)
                if litellm is not None:
                    res.litellm_ttft_err[c] = _litellm_ttft_errors(litellm, res.latency[c]["litellm"])
    if litellm is not None:
        litellm.stop()
    if "3" not in skip:
        noise = Foreign([mock.pid, *(p.pid for p in procs if p.proc is not None)])
        _log("measure 3: capacity, levels " + ", ".join(map(str, mode.capacity.levels)) + " streams")
        res.capacity = cap.ramps(mock, paths[:3], mode.capacity)
        res.foreign["3"] = noise.share()
    if "5" not in skip:
        noise = Foreign([mock.pid, *(p.pid for p in procs if p.proc is not None)])
        for p in mem_procs:
            _log(f"measure 5: memory of {p.name} after {mode.memory[0]:,} and {mode.memory[1]:,} streams")
            recorded = p.recorded if isinstance(p, StreamtapProxy) else None
            res.memory[p.name] = cap.memory(lat.Path(p.name, p.url, p.pid, recorded=recorded), mode.memory)
        res.foreign["5"] = noise.share()
        for p in mem_procs:
            p.stop()
    bare.stop()
    tap.stop()
    if "4" not in skip:
        noise = Foreign([mock.pid])
        _recorder(mode, res, workdir, proxy_cpu, client_cpus)
        res.foreign["4"] = noise.share()
    if "6" not in skip:
        res.dashboard = _dashboard(mode)


def _litellm_ttft_errors(proxy: LiteLLMProxy, samples: lat.Samples) -> list[float]:
    logged = proxy.recorded_ttft()
    out = []
    for cid, (received, first, _) in samples.entries.items():
        if cid in logged and first is not None:
            out.append(logged[cid] - (first - received) * 1000)
    return out


def _recorder(mode: Mode, res: Results, workdir: Path, cpu: int | None, client_cpus: set[int] | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the proxy's CPU, as in the proxy process
    try:
        for kind in ("sqlite", "postgresql"):
            runs = []
            for _ in range(mode.recorder_runs):
                with rb.database(kind, workdir) as url:
                    if url is None:
                        break
                    _log(f"measure 4: recorder throughput into {kind}")
                    runs.append(rb.throughput(url, mode.recorder_streams))
            if not runs:
                res.recorder[kind] = None
                continue
            runs.sort(key=lambda t: t.events_per_s)
            res.recorder[kind] = runs[len(runs) // 2]  # the median run
            res.recorder_runs[kind] = [t.events_per_s for t in runs]
            if kind == "postgresql" and mode is QUICK:
                continue  # the quick run checks drops on SQLite only, to stay under a minute
            with rb.database(kind, workdir) as url:
                if url is None:
                    continue
                _log(f"measure 4: 5,000 events/s into {kind} for {mode.sustain_s:.0f}s")
                res.sustained[kind] = rb.sustained(url, 5000, mode.sustain_s)
    finally:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)


def _dashboard(mode: Mode) -> str:
    script = BENCH / "bench_dashboard.py"
    if not script.exists():
        return "not measured (bench/bench_dashboard.py does not exist)"
    _log("measure 6: dashboard read functions (bench/bench_dashboard.py)")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_dashboard", *mode.dashboard_args],
            capture_output=True,
            text=True,
            timeout=mode.dashboard_timeout,
            cwd=BENCH.parent,
        )
    except subprocess.TimeoutExpired:
        return f"not measured (bench/bench_dashboard.py took over {mode.dashboard_timeout:.0f}s)"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return f"not measured (bench/bench_dashboard.py exited with {done.returncode}: {tail[0]})"
    return done.stdout.strip() or "bench/bench_dashboard.py printed nothing"


if __name__ == "__main__":
    sys.exit(main())
