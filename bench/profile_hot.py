"""`python -m bench.profile_hot [--seconds N] [--streams C]`: where the streamtap proxy spends its time.

Runs the mock upstream and a streamtap proxy (recording to SQLite, pinned like in `bench.run`), drives C
concurrent streams with 20 ms gaps through it, and samples the proxy with py-spy (attached by pid, pausing
it for each sample so stacks are exact, with thread ids). Samples whose leaf is a wait (select, a lock) are
left out. Prints the busy samples per thread, per package, and the top functions by self and by inclusive
time. Needs `py-spy` next to the Python running this (pip install py-spy).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .latency import Path as BenchPath
from .latency import warm_up
from .load import run_load
from .procs import StreamtapProxy, cpu_seconds, harness

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")
PACKAGES = (
    ("streamtap recorder (writer thread)", "/streamtap/recorder.py"),
    ("streamtap metrics", "/streamtap/metrics.py"),
    ("streamtap tap path (addon, tap, sse, chat)", "/streamtap/"),
    ("sqlalchemy", "/sqlalchemy/"),
    ("sqlite3", "/sqlite3/"),
    ("mitmproxy", "/mitmproxy/"),
    ("h11", "/h11/"),
    ("asyncio (incl. socket send/recv syscalls)", "/asyncio/"),
    ("prometheus_client", "/prometheus_client/"),
    ("json", "/json/"),
    ("logging", "/logging/"),
    ("threading", "/threading.py"),
)


# Leaf frames that mean "waiting", not working: py-spy cannot always tell idle threads apart on a VM.
IDLE = frozenset({"select", "wait", "sleep", "acquire", "_PollLikeSelector.select", "EpollSelector.select",
                  "Condition.wait", "Event.wait", "Lock.acquire", "serve_forever", "poll"})  # fmt: skip


def _package(file: str) -> str:
    path = "/" + file
    for name, marker in PACKAGES:
        if marker in path:
            return name
    return "other"


def summarize(raw: Path, top: int = 25) -> str:
    """Collapsed stacks (py-spy `--format raw --threads`) to a plain-text summary."""
    threads: collections.Counter[str] = collections.Counter()
    idle: collections.Counter[str] = collections.Counter()
    busy: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        total += n
        threads[thread] += n
        if not frames:
            continue
        names = []
        for f in frames:
            m = _FRAME.match(f)
            names.append((m["func"], m["file"]) if m else (f, ""))
        leaf_func, leaf_file = names[-1]
        if leaf_func in IDLE:
            idle[thread] += n
            total -= n
            continue
        busy[thread] += n
        packages[_package(leaf_file)] += n
        self_time[f"{leaf_func} ({_short(leaf_file)})"] += n
        for key in {f"{func} ({_short(file)})" for func, file in names}:
            inclusive[key] += n

    def pct(c: int) -> str:
        return f"{100 * c / total:5.1f}%"

    out = [
        f"busy samples: {total} (waiting ones left out: {sum(idle.values())})",
        "",
        "busy samples by thread:",
    ]
    out += [f"  {pct(c)}  {t}" for t, c in busy.most_common()]
    out += ["", "self time by package:"]
    out += [f"  {pct(c)}  {p}" for p, c in packages.most_common()]
    out += ["", f"top {top} by self time:"]
    out += [f"  {pct(c)}  {k}" for k, c in self_time.most_common(top)]
    out += ["", f"top {top} streamtap functions by inclusive time:"]
    ours = [(k, c) for k, c in inclusive.most_common() if "streamtap/" in k]
    out += [f"  {pct(c)}  {k}" for k, c in ours[:top]]
    return "\n".join(out)


def _short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.12/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_hot", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, help="keep the raw collapsed stacks here")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 1
    with harness("streamtap-profile-") as h:
        workdir, mock = h.workdir, h.mock
        proxy = StreamtapProxy(mock.url, workdir, f"sqlite:///{workdir}/p.db", cpu=h.proxy_cpu)
        h.procs.append(proxy)
        proxy.launch().wait_up()
        path = BenchPath("streamtap", proxy.url, proxy.pid)
        warm_up(mock, [path])
        raw = args.out or workdir / "stacks.txt"
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(proxy.pid),
                "--threads",
                "-r",
                str(args.rate),
                "-d",
                str(int(args.seconds) + 1),
                "-f",
                "raw",
                "-o",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds(proxy.pid), time.monotonic()
        req = path.request(chunks=50, gap_ms=20, ttft_ms=20)
        load = run_load(
            url=path.url,
            request=req,
            concurrency=args.streams,
            duration=args.seconds,
            stagger=1.02,
            warm=path.request(chunks=1, gap_ms=0, ttft_ms=0),
        )
        events = sum(len(r.events) for r in load.results)
        used = cpu_seconds(proxy.pid) - cpu0
        wall = time.monotonic() - t0
        _, err = spy.communicate(timeout=60)
        print(
            f"{events} events in {wall:.1f}s ({events / wall:.0f}/s) through streamtap "
            f"at {args.streams} streams;"
        )
        print(
            f"proxy CPU {used:.2f}s = {used / events * 1e6:.1f} µs per event "
            f"({used / wall * 100:.0f}% of a CPU)\n"
        )
        if spy.returncode != 0:
            print(err.decode(errors="replace"), file=sys.stderr)
            return 1
        print(summarize(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
