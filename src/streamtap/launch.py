"""Start the Streamlit dashboard as a child process (it has its own server and event loop)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .errors import ConfigError

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def dashboard_command(*, db: str, host: str, port: int) -> list[str]:
    if not DASHBOARD.exists():
        raise ConfigError(
            f"dashboard not found at {DASHBOARD} (install streamtap from its repository with -e)"
        )
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--db",
        db,
    ]


def start_dashboard(*, db: str, host: str, port: int, quiet: bool = False) -> subprocess.Popen[bytes]:
    env = dict(os.environ, STREAMTAP_DB=db)
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(
        dashboard_command(db=db, host=host, port=port),
        env=env,
        stdout=out,
        stderr=out,
        start_new_session=quiet,
    )


def run_dashboard(*, db: str, host: str, port: int) -> int:
    proc = start_dashboard(db=db, host=host, port=port)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
