"""Real processes for integration tests: the streamtap proxy as a subprocess, ports, polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("STREAMTAP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for[T](
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as e:  # the thing polled may not be up yet
            last_exc = e
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(
        f"timed out waiting for {what or predicate}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ProxyProcess:
    """`streamtap proxy` in its own process, bound to 127.0.0.1 on free ports."""

    def __init__(
        self,
        db_url: str,
        workdir: Path,
        *,
        upstream: str | None = None,
        mode: str = "reverse",
        extra: list[str] | None = None,
        metrics: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_url = db_url
        self.env = env or {}
        self.port = free_port()
        self.metrics_port = free_port() if metrics else 0
        self.workdir = workdir
        args = [
            sys.executable,
            "-m",
            "streamtap",
            "proxy",
            "--mode",
            mode,
            "--listen-port",
            str(self.port),
            "--db",
            db_url,
            "--metrics-port",
            str(self.metrics_port),
        ]
        if upstream:
            args += ["--upstream", upstream]
        args += extra or []
        self.args = args
        self.log_path = workdir / f"proxy-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        env.pop("HTTPS_PROXY", None)
        env.pop("HTTP_PROXY", None)
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.output()}")
            if not port_open(self.port):
                return False
            if self.metrics_port:
                return httpx.get(self.metrics_url, timeout=1).status_code == 200
            return True

        try:
            wait_for(up, timeout, what="the proxy to listen")
        except Exception:
            self.stop()
            raise
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def metrics_text(self) -> str:
        return httpx.get(self.metrics_url, timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (those carrying all `labels`) on the proxy's /metrics now."""
        return metric_sum(self.metrics_text(), name, **labels)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    code = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code = self.proc.wait()
            else:
                code = self.proc.returncode
            self.proc = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
        return code

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_record(
    db_url: str, match: Callable[[Any], bool], *, last: int = 50, timeout: float = 20, what: str = ""
) -> Any:
    """Poll the database until one of the `last` newest finished records matches, and return it."""
    from sqlalchemy.orm import Session

    from streamtap import read
    from streamtap.db.engine import make_engine
    from streamtap.records import Outcome

    engine = make_engine(db_url)

    def find() -> Any:
        with Session(engine) as session:
            for rec in read.get_streams(session, last=last):
                if rec.outcome is not Outcome.IN_PROGRESS and match(rec):
                    return rec
        return None

    try:
        return wait_for(find, timeout, what=what or "a matching record")
    finally:
        engine.dispose()


def carries(completion_id: str, *, head: int | None = None) -> Callable[[Any], bool]:
    """Matches the record whose body (its first `head` events, or all of it) holds this completion id."""
    needle = completion_id.encode()

    def match(rec: Any) -> bool:
        events = rec.events if head is None else rec.events[:head]
        return any(needle in e.raw for e in events) or needle in (rec.response_body or "").encode()

    return match


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=2):
            return True
    except Exception:
        return False


def require_pg() -> None:
    """Skip when PostgreSQL is unreachable, unless STREAMTAP_REQUIRE_PG=1 (CI), where that fails."""
    import pytest

    if pg_available():
        return
    if os.environ.get("STREAMTAP_REQUIRE_PG") == "1":
        pytest.fail("PostgreSQL on 127.0.0.1:5432 is required (STREAMTAP_REQUIRE_PG=1) but unreachable")
    pytest.skip("PostgreSQL on 127.0.0.1:5432 is unreachable")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtap", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (so a proxy that forks a worker is counted whole).

    Children come from /proc/<pid>/task/<tid>/children (Linux); a process that exits meanwhile is skipped.
    """
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
        total += int(rss[0]) * 1024 if rss else 0  # a zombie has no VmRSS
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def finished_by_prompt(path: Path) -> dict[str, tuple[str, int]]:
    """Finished streams in a SQLite file, by the prompt (first message) that tagged them:
    (outcome, event_count)."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        rows = conn.execute(
            "SELECT request_body, outcome, event_count FROM streams WHERE outcome != 'in_progress'"
        ).fetchall()
    finally:
        conn.close()
    return {json.loads(body)["messages"][0]["content"]: (outcome, count) for body, outcome, count in rows}


def metric_sum(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples (those carrying all `labels`) in a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@dataclass(slots=True)
class ClientStream:
    """What a raw HTTP/1.1 client saw of one streamed response."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)  # de-chunked
    event_times: list[float] = field(default_factory=list)  # time.monotonic() of the read ending each event
    complete: bool = False  # the body's framing ended properly (last chunk, length or clean close)


async def stream_sse(
    port: int,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    *,
    path: str = "/v1/chat/completions",
    result: ClientStream | None = None,
) -> ClientStream:
    """POST `payload` to 127.0.0.1:`port` on a fresh connection and read the whole (SSE) response.

    One asyncio connection and no HTTP library, so hundreds run in one event loop; every event (ended by a
    blank line, as OpenAI and the mock send them) gets the time of the read that completed it. `result` is
    filled in as the response arrives (pass one to watch a stream in progress).
    """
    res = result if result is not None else ClientStream()
    body = json.dumps(payload).encode()
    head = {
        "host": f"127.0.0.1:{port}",
        "content-type": "application/json",
        "accept": "text/event-stream",
        "authorization": "Bearer sk-harness",
        "content-length": str(len(body)),
        "connection": "close",
        **(headers or {}),
    }
    request = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    scan = 0

    def got(data: bytes) -> None:
        nonlocal scan
        now = time.monotonic()
        res.body += data
        while (i := res.body.find(b"\n\n", scan)) >= 0:
            res.event_times.append(now)
            scan = i + 2

    try:
        writer.write(request.encode("latin-1") + body)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        res.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                res.headers[name.strip().lower()] = value.strip()
        if "chunked" in res.headers.get("transfer-encoding", "").lower():
            while size := int((await reader.readline()).split(b";", 1)[0], 16):
                got((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")  # no trailers: the CRLF after the last chunk
            res.complete = True
        elif "content-length" in res.headers:
            got(await reader.readexactly(int(res.headers["content-length"])))
            res.complete = True
        else:
            while data := await reader.read(65536):
                got(data)
            res.complete = True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return res


# A test that replaces a method or module function of a compiled module (streamtap.native) to count or to
# break its calls: compiled code calls those directly, past the patch. `make test` runs it on pure Python.
patches_compiled = pytest.mark.skipif(
    __import__("streamtap.native").native.status.startswith("compiled"),
    reason="patches code that is compiled in this run; `make test` runs it again with STREAMTAP_NATIVE=0",
)
