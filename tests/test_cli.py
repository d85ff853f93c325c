"""The command line as a user meets it: every expected failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from harness import run_cli

COMMANDS = [
    ["proxy"],
    ["db", "upgrade"],
    ["stats"],
    ["export"],
    ["mock-upstream"],
    ["dashboard"],
    ["demo"],
    ["replay"],
    ["import"],
    ["prune"],
]


def one_line_error(result: object, *fragments: str) -> None:
    returncode = result.returncode  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert returncode != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("streamtap: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "-h")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--" in result.stdout


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = run_cli("db", "upgrade", "--db", url)
    assert result.returncode == 0, result.stderr
    return url


def test_empty_database(db: str) -> None:
    stats = run_cli("stats", "--db", db)
    assert stats.returncode == 0 and "no streams recorded yet" in stats.stdout
    export = run_cli("export", "--db", db)
    assert export.returncode == 0 and export.stdout.strip() == "[]"


def test_unknown_id(db: str) -> None:
    one_line_error(run_cli("export", "--db", db, "--id", "0123456789abcdef"), "no stream with id")


def test_bad_database_url() -> None:
    one_line_error(run_cli("stats", "--db", "not a url"), "database URL")


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    one_line_error(run_cli("export", "--db", f"sqlite:///{path}"))
    assert not path.exists()


def test_database_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()
    for command in (["stats"], ["export"], ["db", "upgrade"]):
        one_line_error(run_cli(*command, "--db", f"sqlite:///{path}"), "not a streamtap database")
    # and it was left alone
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"invoices"}


def test_unreachable_postgres() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        one_line_error(run_cli("stats", "--db", f"postgresql+psycopg://postgres@127.0.0.1:{port}/x"))


def test_port_in_use(db: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line_error(
            run_cli("proxy", "--upstream", "http://127.0.0.1:9", "--listen-port", str(port), "--db", db),
            "in use",
            str(port),
        )
        one_line_error(
            run_cli(
                "proxy",
                "--upstream",
                "http://127.0.0.1:9",
                "--listen-port",
                "1",
                "--metrics-port",
                str(port),
                "--db",
                db,
            ),
            "metrics",
        )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["proxy"], "--upstream"),
        (["proxy", "--upstream", "ftp://x"], "bad --upstream"),
        (["proxy", "--mode", "regular", "--upstream", "http://x"], "reverse mode"),
        (["stats", "--since", "yesterday"], "bad duration"),
        (["export", "--last", "2", "--id", "abc"], "either"),
    ],
)
def test_bad_arguments(db: str, args: list[str], fragment: str) -> None:
    one_line_error(run_cli(*args, "--db", db), fragment)
