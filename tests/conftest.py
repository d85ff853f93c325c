"""Shared database fixtures: a migrated SQLite file, and a fresh schema on the machine's PostgreSQL.

PostgreSQL tests skip when the server on 127.0.0.1:5432 is unreachable, unless STREAMTAP_REQUIRE_PG=1 (CI),
where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from streamtap.db.engine import make_engine, upgrade

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def _pg_admin():  # type: ignore[no-untyped-def]
    """A psycopg connection to the test server, or skip (fail when STREAMTAP_REQUIRE_PG=1)."""
    import psycopg

    try:
        return psycopg.connect(PG_DSN, connect_timeout=2, autocommit=True)
    except psycopg.OperationalError as e:
        if os.environ.get("STREAMTAP_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL is required (STREAMTAP_REQUIRE_PG=1) but unreachable: {e}")
        pytest.skip(f"PostgreSQL unreachable on 127.0.0.1:5432: {e}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema, dropped afterwards."""
    schema = f"streamtap_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{PG_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/streamtap.db"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on a SQLite file and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated database's engine, disposed afterwards."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()
