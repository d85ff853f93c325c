"""Ways to take the database away from a running recorder or proxy: a read-only SQLite file that stays
read-only for root, and a throwaway PostgreSQL cluster that can really be stopped and started again.

The machine's shared PostgreSQL on 127.0.0.1:5432 is never stopped: `PgCluster` runs its own server on a
free port, in a temporary directory, as the `postgres` OS user when the tests run as root (initdb refuses
root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from harness import free_port


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """Make a SQLite file read-only so that writing really fails; yields how. Skips when nothing can.

    chmod is enough for other users; root ignores the mode bits, so for root the file is made immutable
    (`chattr +i`, which needs CAP_LINUX_IMMUTABLE and a file system that has the flag). Only the database
    file itself: an immutable `-shm` would make SQLite's mapping of it raise SIGBUS in the writer.
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield "chmod 0444"
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    done = (
        chattr is not None and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0
    )
    if not done or os.access(path, os.W_OK):
        pytest.skip("running as root and `chattr +i` does not work here: nothing makes the file read-only")
    assert chattr is not None
    try:
        yield "chattr +i"
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


class PgCluster:
    """A PostgreSQL server of our own (initdb + pg_ctl), trust auth, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="streamtap-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")  # KeyError: no such user
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}")

    def init(self) -> PgCluster:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
            "-E", "UTF8",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir / "server.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: open connections are terminated, new ones refused until `start()`."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started throwaway cluster; skips when PostgreSQL's tooling is unreachable, except under
    STREAMTAP_REQUIRE_PG=1 (see harness.require_pg), where that fails the test instead."""
    try:
        cluster = PgCluster()
    except (RuntimeError, KeyError, OSError) as e:
        _unavailable(f"cannot set up a throwaway PostgreSQL cluster: {e}")
    try:
        try:
            cluster.init().start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            _unavailable(f"cannot run a throwaway PostgreSQL cluster: {e}")
        yield cluster
    finally:
        cluster.destroy()


def _unavailable(why: str) -> NoReturn:
    if os.environ.get("STREAMTAP_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL is required (STREAMTAP_REQUIRE_PG=1): {why}")
    pytest.skip(why)
