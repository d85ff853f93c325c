"""Real processes for integration tests: the streamtap proxy as a subprocess, ports, polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

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
    ) -> None:
        self.db_url = db_url
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
        env = dict(os.environ, PYTHONUNBUFFERED="1")
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
