"""Shared database fixtures: a migrated SQLite file, and a fresh schema on the machine's PostgreSQL.

PostgreSQL tests skip when the server on 127.0.0.1:5432 is unreachable, unless STREAMTAP_REQUIRE_PG=1 (CI),
where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from streamtap.db.engine import make_engine, upgrade
from streamtap.records import Choice, EventKind, EventRecord, Outcome, StreamRecord, Usage
from streamtap.sse import ItemKind, decode_all

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


def events_from_body(body: bytes, *, step_ms: float = 1.5) -> tuple[EventRecord, ...]:
    """Events as the tap records them: one per decoded SSE item, in order, with its exact bytes."""
    kinds = {ItemKind.EVENT: EventKind.DATA, ItemKind.COMMENT: EventKind.COMMENT}
    items = decode_all(body)
    return tuple(
        EventRecord(
            seq=i,
            t_ms=i * step_ms,
            gap_ms=None if i == 0 else step_ms,
            kind=kinds.get(item.kind, EventKind.MALFORMED),
            data=None if item.kind is ItemKind.PADDING else item.data,
            raw=item.raw,
            event=item.event,
            tokens=item.kind is ItemKind.EVENT,
        )
        for i, item in enumerate(items)
    )


@pytest.fixture(name="events_from_body")
def events_from_body_fixture() -> Callable[..., tuple[EventRecord, ...]]:
    """`events_from_body(body, step_ms=1.5)`: the events the tap would record for a whole body."""
    return events_from_body


@pytest.fixture
def make_record() -> Callable[..., StreamRecord]:
    """A factory of plausible finished records; keyword arguments override any field."""
    counter = iter(range(1_000_000))

    def make(**fields: Any) -> StreamRecord:
        n = next(counter)
        base: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "started_at": datetime(2026, 11, 24, 8, 0, tzinfo=UTC) + timedelta(seconds=n),
            "method": "POST",
            "url": "https://api.example.com/v1/chat/completions",
            "host": "api.example.com",
            "path": "/v1/chat/completions",
            "status_code": 200,
            "stream": True,
            "request_model": "gpt-test",
            "model": "gpt-test-2026",
            "outcome": Outcome.COMPLETED,
            "error": None,
            "ttfb_ms": 10.0,
            "ttft_ms": 20.0,
            "ttfc_ms": 20.0,
            "duration_ms": 100.0,
            "usage": Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7),
            "choices": (Choice(0, "Hi!", None, None, (), "stop"),),
            "events": events_from_body(b'data: {"x": 1}\n\ndata: [DONE]\n\n'),
            "proxy_instance": "test:8080",
        }
        base.update(fields)
        return StreamRecord(**base)

    return make
