"""The engine factory, the migrations, and the checks that keep streamtap off databases it does not own."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from streamtap.db import packs
from streamtap.db.engine import MIGRATIONS_DIR, PAGE_SIZE, check_schema, json_text, make_engine, upgrade
from streamtap.db.models import Base
from streamtap.errors import ConfigError, DatabaseError, NotOurDatabaseError
from streamtap.read import get_stream, get_streams
from streamtap.seed import seed_database

HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _tables(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


class TestMakeEngine:
    @pytest.mark.parametrize("url", ["not a url", "mysql://u@host/db", "sqlite//x.db", ""])
    def test_garbage_url(self, url: str) -> None:
        with pytest.raises(ConfigError, match="bad database URL"):
            make_engine(url)

    def test_postgresql_means_psycopg(self) -> None:
        engine = make_engine("postgresql://u:secret@127.0.0.1:1/db")
        try:
            assert engine.url.drivername == "postgresql+psycopg"
            assert engine.pool._pre_ping  # type: ignore[attr-defined]
        finally:
            engine.dispose()

    def test_sqlite_pragmas(self, tmp_path: Path) -> None:
        engine = make_engine(f"sqlite:///{tmp_path}/a.db")
        try:
            with engine.connect() as conn:
                pragmas = {
                    name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
                }
        finally:
            engine.dispose()
        assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1, "synchronous": 1}

    def test_new_databases_get_16k_pages_and_existing_ones_keep_theirs(self, tmp_path: Path) -> None:
        old = tmp_path / "old.db"
        with sqlite3.connect(old) as conn:  # a database from before: SQLite's default 4 KiB pages, WAL
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (x)")
        sizes = {}
        for name in ("new.db", "old.db"):
            engine = make_engine(f"sqlite:///{tmp_path}/{name}")
            try:
                if name == "new.db":
                    upgrade(engine)
                with engine.connect() as conn:
                    sizes[name] = conn.exec_driver_sql("PRAGMA page_size").scalar()
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            finally:
                engine.dispose()
        assert sizes == {"new.db": PAGE_SIZE, "old.db": 4096}
        assert PAGE_SIZE == 16384

    def test_parent_directory_created_on_first_connection_only(self, tmp_path: Path) -> None:
        path = tmp_path / "deep" / "er" / "x.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            assert not path.parent.exists()
            with engine.connect():
                pass
            assert path.is_file()
        finally:
            engine.dispose()


class TestUpgrade:
    def test_fresh_database(self, db_url: str) -> None:
        upgrade(db_url)
        upgrade(db_url)  # a second run is a no-op
        assert _tables(db_url) == ["alembic_version", "stream_event_packs", "streams"]
        engine = make_engine(db_url)
        try:
            with engine.connect() as conn:
                assert MigrationContext.configure(conn).get_current_revision() == HEAD
                indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("streams")}
                pk = sa.inspect(conn).get_pk_constraint("stream_event_packs")
                fks = sa.inspect(conn).get_foreign_keys("stream_event_packs")
                views = sa.inspect(conn).get_view_names()
        finally:
            engine.dispose()
        assert indexes == {
            f"ix_streams_{c}"
            for c in ("started_at", "host", "request_model", "outcome", "finish_reason", "api_key_fp")
        }
        assert views == ["stream_events"]
        assert pk["constrained_columns"] == ["stream_id"]
        assert [(fk["referred_table"], fk["options"].get("ondelete")) for fk in fks] == [
            ("streams", "CASCADE")
        ]

    def test_models_match_migrations(self, engine: sa.Engine) -> None:
        """What `alembic check` does in CI: a model change without a migration fails here."""
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            command.check(cfg)  # raises AutogenerateDiffsDetected on any difference

    def test_cascade_delete(self, engine: sa.Engine, events_from_body: Callable[..., Any]) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO streams (id, started_at, method, url, host, path, stream, api, outcome,"
                " choices, event_count, token_event_count, proxy_instance, tap_errors, extra) VALUES"
                " ('s1', '2026-11-24 08:00:00', 'POST', 'u', 'h', 'p', false, '', 'completed', '[]', 1, 0,"
                " 'i', 0, '{}')"
            )
            conn.exec_driver_sql(
                packs.insert_sql(engine.dialect), [packs.pack("s1", events_from_body(b"data: x\n\n"))]
            )
            assert conn.exec_driver_sql("SELECT count(*) FROM stream_events").scalar() == 1
            conn.exec_driver_sql("DELETE FROM streams WHERE id = 's1'")
            assert conn.exec_driver_sql("SELECT count(*) FROM stream_event_packs").scalar() == 0
            assert conn.exec_driver_sql("SELECT count(*) FROM stream_events").scalar() == 0


class TestNotOurDatabase:
    def test_foreign_tables(self, db_url: str) -> None:
        engine = make_engine(db_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE users (id integer primary key)")
                conn.exec_driver_sql("CREATE TABLE orders (id integer primary key)")
            with pytest.raises(
                NotOurDatabaseError, match=r"is not a streamtap database \(it has tables: orders, users\)"
            ):
                upgrade(engine)
            with pytest.raises(NotOurDatabaseError, match="it has tables: orders, users"):
                check_schema(engine)
        finally:
            engine.dispose()
        assert _tables(db_url) == ["orders", "users"]  # untouched

    def test_unknown_revision(self, engine: sa.Engine) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dcafe'")
        with pytest.raises(NotOurDatabaseError, match="'f00dcafe' is unknown"):
            upgrade(engine)
        with pytest.raises(NotOurDatabaseError, match="'f00dcafe' is unknown"):
            check_schema(engine)

    def test_not_a_sqlite_file(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.db"
        path.write_bytes(b"just some text, not a database" * 100)
        engine = make_engine(f"sqlite:///{path}")
        try:
            with pytest.raises(DatabaseError, match=f"cannot open database {path}: file is not a database"):
                upgrade(engine)
        finally:
            engine.dispose()


class TestUnreachable:
    @pytest.mark.parametrize("action", [upgrade, check_schema])
    def test_closed_postgresql_port(self, action: object) -> None:
        engine = make_engine("postgresql+psycopg://postgres:pw@127.0.0.1:1/test?connect_timeout=2")
        try:
            with pytest.raises(
                DatabaseError, match=r"^cannot open database postgresql\+psycopg://postgres:\*\*\*@"
            ) as info:
                action(engine)  # type: ignore[operator]
        finally:
            engine.dispose()
        assert type(info.value) is DatabaseError
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
        assert "pw" not in str(info.value)

    def test_upgrade_by_url_unreachable(self) -> None:
        with pytest.raises(DatabaseError, match="cannot open database"):
            upgrade("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


class TestCheckSchema:
    def test_missing_sqlite_file_is_not_created(self, tmp_path: Path) -> None:
        path = tmp_path / "nowhere" / "streamtap.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            with pytest.raises(DatabaseError, match=f"^no database at {path}$"):
                check_schema(engine)
        finally:
            engine.dispose()
        assert not path.parent.exists()

    def test_empty_database_needs_upgrade(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.db"
        sqlite3.connect(path).close()
        assert path.is_file()
        engine = make_engine(f"sqlite:///{path}")
        try:
            with pytest.raises(DatabaseError, match="run `streamtap db upgrade`"):
                check_schema(engine)
        finally:
            engine.dispose()
        assert _tables(f"sqlite:///{path}") == []

    def test_migrated_database_passes(self, engine: sa.Engine) -> None:
        check_schema(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM alembic_version")
        with pytest.raises(NotOurDatabaseError):
            check_schema(engine)  # tables without a revision are someone else's


# Event rows as revision 0001 stored them: names missing, empty and set; bytes that are not UTF-8 or hold
# NUL; gaps of None and 0; token flags mixed.
_OLD_EVENTS = [
    ("s1", 0, 0.5, None, "data", None, False, b'data: {"choices":[]}\n\n'),
    ("s1", 1, 20.25, 19.75, "data", "", True, b"event:\ndata: hi\n\n"),
    ("s1", 2, 20.25, 0.0, "comment", None, False, b": keep-alive\n"),
    ("s1", 3, 1e-3 + 41.0, 20.751, "data", "delta", True, b"event: delta\ndata: \xff\x00\n\n"),
    ("s1", 4, 60.125, 19.124, "done", None, False, b"data: [DONE]\n\n\n"),
    ("s2", 0, 3.0, None, "malformed", None, False, b""),
]


class TestEventPacks:
    """Revision 0002 moves each stream's event rows into one pack, and back on downgrade, bit for bit."""

    @staticmethod
    def _migrate(conn: sa.Connection, revision: str, *, down: bool = False) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)

    @staticmethod
    def _old_rows(conn: sa.Connection) -> list[tuple[Any, ...]]:
        rows = conn.exec_driver_sql(
            "SELECT stream_id, seq, t_ms, gap_ms, kind, event, tokens, raw FROM stream_events"
            " ORDER BY stream_id, seq"
        )
        return [(*row[:6], bool(row[6]), bytes(row[7])) for row in rows]

    def test_upgrade_packs_and_downgrade_unpacks(self, db_url: str) -> None:
        engine = make_engine(db_url)
        try:
            with engine.begin() as conn:
                self._migrate(conn, "0001")
                for sid in ("s1", "s2", "s3"):
                    conn.exec_driver_sql(
                        "INSERT INTO streams (id, started_at, method, url, host, path, stream, api, outcome,"
                        " choices, event_count, token_event_count, proxy_instance, tap_errors, extra) VALUES"
                        f" ('{sid}', '2026-11-24 08:00:00', 'POST', 'u', 'h', 'p', true, '', 'completed',"
                        " '[]', 0, 0, 'i', 0, '{}')"
                    )
                mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
                conn.exec_driver_sql(
                    f"INSERT INTO stream_events (stream_id, seq, t_ms, gap_ms, kind, event, tokens, raw)"
                    f" VALUES ({', '.join([mark] * 8)})",
                    _OLD_EVENTS,
                )
                self._migrate(conn, "head")
                # what the view shows is what the table held
                assert self._old_rows(conn) == _OLD_EVENTS
                pack = conn.execute(
                    sa.text("SELECT events, token_gaps_ms FROM stream_event_packs WHERE stream_id = 's1'")
                ).one()
                assert conn.exec_driver_sql("SELECT count(*) FROM stream_event_packs").scalar() == 2
            with Session(engine) as session:
                events = get_stream(session, "s1").events
                assert not get_stream(session, "s3").events  # a stream without events has no pack
            assert [(e.seq, e.t_ms, e.gap_ms, e.kind.value, e.event, e.tokens, e.raw) for e in events] == [
                row[1:] for row in _OLD_EVENTS[:5]
            ]
            packed, gaps = (json.loads(v) if isinstance(v, str) else v for v in pack)
            assert len(packed) == 5
            assert gaps == [(1e-3 + 41.0) - 20.25]
            with engine.begin() as conn:
                self._migrate(conn, "0001", down=True)
                assert self._old_rows(conn) == _OLD_EVENTS
            assert _tables(db_url) == ["alembic_version", "stream_events", "streams"]
        finally:
            engine.dispose()

    def test_view_matches_the_reader(self, engine: sa.Engine) -> None:
        """The `stream_events` view unpacks what the recorder packed exactly as `read` does."""
        seed_database(engine, streams=40, seed=7)
        with Session(engine) as session:
            recs = get_streams(session)
            rows = session.execute(
                sa.text(
                    "SELECT stream_id, seq, t_ms, gap_ms, kind, event, tokens, raw FROM stream_events"
                    " ORDER BY stream_id, seq"
                )
            ).all()
        expected = sorted(
            (r.id, e.seq, e.t_ms, e.gap_ms, e.kind.value, e.event, e.tokens, e.raw)
            for r in recs
            for e in r.events
        )
        assert len(expected) > 200
        assert [(*row[:6], bool(row[6]), bytes(row[7])) for row in rows] == expected


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        ([{"content": "héllo 世界 😀", "n": None}], '[{"content":"héllo 世界 😀","n":null}]'),  # readable
        ({"big": 2**70}, '{"big": 1180591620717411303424}'),  # beyond orjson: json writes it
        ({1: "a"}, '{"1": "a"}'),  # a key that is not a string: json's conversion
        ([float("nan")], "[null]"),  # json would write NaN, which is not JSON
    ],
)
def test_json_columns_text(obj: object, text: str) -> None:
    assert json_text(obj) == text
