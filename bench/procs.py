"""The proxies under test, each in its own process bound to 127.0.0.1, optionally pinned with taskset."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .mock_proc import MockProcess

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# The CPUs this process could use when it started, before the load client pinned itself to one of them
# (children inherit that narrower affinity, so the proxy's CPU must be checked against this).
CPUS = frozenset(os.sched_getaffinity(0))


def split_cpus() -> tuple[set[int] | None, int | None]:
    """(the CPUs for the load client and the mock, the CPU for the proxy under test); (None, None) on one
    CPU."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None, None
    return {mine[0]}, mine[1]


@dataclass
class Harness:
    """What every bench entry point sets up: a work directory, the mock on the client's CPU, and the
    proxies started in it (`procs`, stopped on the way out)."""

    workdir: Path
    mock: MockProcess
    client_cpus: set[int] | None
    proxy_cpu: int | None
    procs: list[Proc] = field(default_factory=list)


@contextlib.contextmanager
def harness(prefix: str) -> Iterator[Harness]:
    """A temporary work directory; this process (the load client) and the mock pinned to the first CPU, the
    proxies to go on the second (`split_cpus`); on the way out, every proxy in `procs` and the mock stop."""
    client, proxy_cpu = split_cpus()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        if client:
            os.sched_setaffinity(0, client)
        mock = MockProcess(cpus=client).start()
        h = Harness(Path(tmp), mock, client, proxy_cpu)
        try:
            yield h
        finally:
            for p in h.procs:
                p.stop()
            mock.stop()


def pin(cpu: int | None) -> list[str]:
    """A `taskset -c CPU` prefix, when taskset exists and the CPU is ours to use."""
    if cpu is None or shutil.which("taskset") is None or cpu not in CPUS:
        return []
    return ["taskset", "-c", str(cpu)]


def tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (streamtap's proxy runs its worker as a child process)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            tasks = os.listdir(f"/proc/{pids[i]}/task")
        except OSError:
            tasks = []
        for tid in tasks:
            try:
                with open(f"/proc/{pids[i]}/task/{tid}/children") as f:
                    pids += [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
        i += 1
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its descendants."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            if p == pid:
                raise RuntimeError(f"no VmRSS for {pid}") from None
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time the process and its descendants have used, all live threads (nanosecond schedstat).

    A descendant that exits takes its CPU time along: measure while they run.
    """
    total = 0
    for _, _, task in tasks(pid):
        try:
            with open(f"{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def tasks(pid: int) -> Iterator[tuple[int, bool, str]]:
    """Every live thread of `pid` and its descendants: (the process's place in `tree`, whether the thread is
    its process's main thread, the thread's /proc directory)."""
    for i, p in enumerate(tree(pid)):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            yield i, tid == str(p), f"/proc/{p}/task/{tid}"


def _busy_seconds() -> float:
    """CPU time all CPUs spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user, nice, system, steal: irq and softirq time is left out, as it is mostly our own loopback traffic
    # and not charged to our processes
    user, nice, system = fields[0], fields[1], fields[2]
    steal = fields[7] if len(fields) > 7 else 0
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


class Foreign:
    """How much CPU processes other than ours used while a measure ran: the noise on a shared machine."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        ours = sum(cpu_seconds(p) for p in self.pids if os.path.exists(f"/proc/{p}"))
        me = os.times()
        return time.monotonic(), _busy_seconds(), ours + me.user + me.system

    def share(self) -> float:
        """Other processes' CPU time / (wall time x CPUs), since this object was made."""
        t1, busy1, ours1 = self._read()
        t0, busy0, ours0 = self._start
        wall = (t1 - t0) * (os.cpu_count() or 1)
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall if wall > 0 else 0.0


class Proc:
    """A server process that is up once `port` accepts connections."""

    name = "proc"

    def __init__(self, args: list[str], port: int, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.port, self.workdir = args, port, workdir
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> Proc:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env
        )
        return self

    def wait_up(self, timeout: float = 60.0) -> Proc:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not listen on {self.port} within {timeout}s")

    # -- the diagnostic addon (bench/probe_addon.py) --
    probe_flag = ("-s",)

    def enable_probe(self) -> Proc:
        """Load bench/probe_addon.py into the proxy (call before launch())."""
        self.probe_out = self.workdir / f"probe-{self.name}-{self.port}.json"
        self.env["BENCH_PROBE_OUT"] = str(self.probe_out)
        script = str(BENCH / "probe_addon.py")
        self.args += ["-s", script] if self.probe_flag == ("-s",) else ["--set", f"scripts={script}"]
        return self

    def probe_start(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)  # type: ignore[union-attr]

    def probe_read(self, timeout: float = 10.0) -> dict[str, list[Any]]:
        self.probe_out.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return dict(json.loads(self.probe_out.read_text()))
            except (OSError, ValueError):
                time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no probe output")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()


def _mitmdump() -> list[str]:
    exe = Path(sys.executable).with_name("mitmdump")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()"]


class BareMitmproxy(Proc):
    """`mitmdump -s bench/bare_addon.py --mode reverse:URL`: streaming on, nothing else."""

    name = "bare"

    def __init__(self, upstream: str, workdir: Path, cpu: int | None = None) -> None:
        port = free_port()
        args = [
            *pin(cpu),
            *_mitmdump(),
            "-q",
            "-s",
            str(BENCH / "bare_addon.py"),
            "--mode",
            f"reverse:{upstream}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            "anticomp=false",  # as streamtap sets it
        ]
        super().__init__(args, port, workdir)


class StreamtapProxy(Proc):
    """`python -m streamtap proxy` recording to `db` (metrics endpoint on, as deployed)."""

    name = "streamtap"
    probe_flag = ("--set",)

    def __init__(
        self,
        upstream: str,
        workdir: Path,
        db: str,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        name: str = "streamtap",
    ) -> None:
        port = free_port()
        self.db = db
        self.name = name
        self.metrics_port = free_port()
        args = [
            *pin(cpu),
            sys.executable,
            "-m",
            "streamtap",
            "proxy",
            "-q",
            "--upstream",
            upstream,
            "--listen-port",
            str(port),
            "--db",
            db,
            "--metrics-port",
            str(self.metrics_port),
            "--instance",
            f"bench-{port}",
        ]
        super().__init__(args, port, workdir, env)

    def wait_up(self, timeout: float = 60.0) -> Proc:
        """Up once it listens and its worker serves /metrics (the proxy listens a moment before)."""
        super().wait_up(timeout)
        deadline = time.monotonic() + timeout
        while not _port_open(self.metrics_port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no metrics on {self.metrics_port} within {timeout}s")
            time.sleep(0.05)
        return self

    def recorded(self) -> float:
        """Records written so far (its `streamtap_recorder_written_total`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("streamtap_recorder_written_total "):
                return float(line.split()[1])
        return 0.0


def calibrate(cpu: int | None, rounds: int = 5) -> float:
    """Milliseconds a fixed pure-Python workload takes on `cpu` (the proxy's), best of `rounds`.

    The machines this runs on differ in speed by up to 2x between sessions (bare mitmproxy's CPU per event at
    50 streams was 90 µs at 15:04 and 170 µs at 17:06 on 2026-11-24), which moves every absolute figure:
    the header prints this so that runs compare. The workload is what both proxies spend their time on:
    method calls, attribute and dict access, small strings, and JSON parsing.
    """
    chunk = json.dumps(
        {
            "id": "chatcmpl-0",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
        }
    )

    class Acc:
        __slots__ = ("n", "parts")

        def __init__(self) -> None:
            self.n = 0
            self.parts: list[str] = []

        def feed(self, obj: dict[str, Any]) -> None:
            delta = obj["choices"][0]["delta"]
            self.parts.append(delta.get("content") or "")
            self.n += len(self.parts[-1])

    def work() -> int:
        acc = Acc()
        for _ in range(20_000):
            acc.feed(json.loads(chunk))
        return acc.n

    before = os.sched_getaffinity(0)
    best = math.inf
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        for _ in range(rounds):
            began = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - began)
    finally:
        os.sched_setaffinity(0, before)
    return best * 1000


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    import sqlite3

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit = (commit + (" + uncommitted changes in src/" if dirty else "")) or "-"
    except (OSError, subprocess.TimeoutExpired):
        commit = "-"

    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": version("mitmproxy"),
        "streamtap": f"{version('streamtap')} @ {commit}",
        "sqlalchemy": version("sqlalchemy"),
        "sqlite": sqlite3.sqlite_version,
        "psycopg": version("psycopg"),
        "taskset": "yes" if shutil.which("taskset") else "no",
    }
