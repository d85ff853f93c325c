"""The engine factory and the Alembic migration runner.

Alembic is the only source of the schema: `upgrade()` runs `upgrade head` on the database; read-only commands
call `check_schema()`, which never creates or changes anything.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ..errors import ConfigError, DatabaseError, NotOurDatabaseError

DEFAULT_DB_URL = "sqlite:///streamtap.db"

# The package is installed editable from src/, so the repository root is three levels above this package.
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

VERSION_TABLE = "alembic_version"

PAGE_SIZE = 16384  # of a new SQLite database: see _sqlite_pragmas

log = logging.getLogger("streamtap.recorder")


def make_engine(url: str) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL (`postgresql://` means psycopg 3).

    SQLite connections get WAL, a 5 s busy timeout, foreign keys and synchronous=NORMAL; the database's parent
    directory is created when the first connection is opened, so merely building an engine touches nothing.
    PostgreSQL connections are pinged before use, so a restarted server costs no failed write.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        raise ConfigError(f"bad database URL {url!r}: expected sqlite:///PATH or postgresql://...") from e
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"bad database URL {_show(parsed)}: only sqlite and postgresql are supported")
    kwargs: dict[str, Any] = {"json_serializer": json_text}
    if backend == "postgresql":
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise ConfigError(f"bad database URL {_show(parsed)}: {e}") from e
    if backend == "sqlite":
        sa.event.listen(engine, "do_connect", _sqlite_make_parent)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def json_text(obj: Any) -> str:
    """A JSON column's text, non-ASCII kept readable: orjson's (a stream row's choices in a fifth of the
    time), or `json`'s for what orjson refuses (an integer beyond 64 bits, a key that is not a string). A
    NaN becomes null, where `json` wrote NaN: not JSON, and PostgreSQL's json type refuses it."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, ensure_ascii=False)


def _sqlite_make_parent(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
    path = _sqlite_path(cargs[0] if cargs else None)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseError(f"cannot create the directory of {path}: {e.strerror or e}") from e


def _sqlite_pragmas(dbapi_conn: Any, conn_rec: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        # First, so that switching to WAL also waits for a lock held elsewhere.
        cursor.execute("PRAGMA busy_timeout=5000")
        # A new database gets 16 KiB pages (before WAL: a WAL database keeps the size it has; an existing
        # one keeps its own). A stream's event pack is tens of KiB of bytes and JSON: at SQLite's default 4
        # KiB it spread over ~4x as many overflow pages, each one write to the WAL and one more at the
        # checkpoint (16 system calls per stream of 54 events instead of 4, ~0.3 µs per event).
        cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")
        # WAL lets the dashboard and the CLI read while the recorder writes; NORMAL is durable in WAL mode
        # except for the last transactions on power loss (https://www.sqlite.org/pragma.html#pragma_synchronous).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_path(db: str | None) -> Path | None:
    """The file of a SQLite database, or None for an in-memory or URI-named one."""
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def _show(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def describe_error(e: BaseException) -> str:
    """The first line of what the database driver said."""
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _alembic_config() -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise DatabaseError(
            f"the migrations are missing ({MIGRATIONS_DIR}): "
            "install streamtap from its source tree (pip install -e)"
        )
    # No ini file: env.py then leaves the application's logging configuration alone.
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _connect(engine: sa.Engine) -> sa.Connection:
    try:
        return engine.connect()
    except sa.exc.DBAPIError as e:
        raise DatabaseError(f"cannot open database {_show(engine.url)}: {describe_error(e)}") from e


def _current_revision(conn: sa.Connection, script: ScriptDirectory, shown: str) -> str | None:
    """The database's schema revision; None for an empty database. Raises for a database not ours."""
    tables = sorted(sa.inspect(conn).get_table_names())
    revision = MigrationContext.configure(conn).get_current_revision() if VERSION_TABLE in tables else None
    if revision is None:
        if any(t != VERSION_TABLE for t in tables):
            raise NotOurDatabaseError(
                f"{shown} is not a streamtap database (it has tables: {', '.join(tables)})"
            )
        return None
    known = {script_rev.revision for script_rev in script.walk_revisions()}
    if revision not in known:
        raise NotOurDatabaseError(
            f"{shown} is not a streamtap database this version knows "
            f"(schema revision {revision!r} is unknown: written by a newer streamtap?)"
        )
    return revision


def upgrade(engine_or_url: sa.Engine | str) -> None:
    """Create or migrate the schema to the newest revision (Alembic `upgrade head`)."""
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        cfg = _alembic_config()
        script = ScriptDirectory.from_config(cfg)
        shown = _show(engine.url)
        with _connect(engine) as conn:
            try:
                with conn.begin():
                    _current_revision(conn, script, shown)
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            except sa.exc.DBAPIError as e:
                raise DatabaseError(f"cannot upgrade database {shown}: {describe_error(e)}") from e
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def check_schema(engine: sa.Engine) -> None:
    """For read-only commands: the database exists, is streamtap's, and is migrated. Changes nothing."""
    shown = _show(engine.url)
    if engine.url.get_backend_name() == "sqlite":
        path = _sqlite_path(engine.url.database)
        if path is not None and not path.is_file():
            raise DatabaseError(f"no database at {path}")
    script = ScriptDirectory.from_config(_alembic_config())
    with _connect(engine) as conn:
        try:
            revision = _current_revision(conn, script, shown)
        except sa.exc.DBAPIError as e:
            raise DatabaseError(f"cannot read database {shown}: {describe_error(e)}") from e
    if revision is None:
        raise DatabaseError(f"{shown} has no streamtap schema yet: run `streamtap db upgrade`")
    heads = script.get_heads()
    if revision not in heads:
        raise DatabaseError(
            f"{shown} has an older schema (revision {revision}, current {', '.join(heads)}): "
            "run `streamtap db upgrade`"
        )


class SqliteFileWatch:
    """Keeps a long-lived SQLite engine writing into the file at its path, whatever happens to that file.

    Pooled connections hold the database open: when the file is deleted or replaced, they keep writing into
    the old inode and every later commit is silently lost; when it is made read-only, they keep writing
    through descriptors opened while it was writable. The writer calls `before_write()` and `after_write()`
    around each transaction (an `os.stat` and an `os.access`, a few microseconds each):

    - **deleted or replaced**: the pool is disposed and the schema upgraded at the path (a new empty database
      when the file is gone). What the old file held is gone with it. A transaction that committed while
      the file was being deleted is reported by `after_write()`, so the caller writes it again. The old
      file's `-wal` and `-shm`, which SQLite leaves behind when a moved database is closed, are removed:
      replayed onto the new file, that log would corrupt it.
    - **its `-wal` deleted**: the commits the log still held are reachable only through our open handle, so
      they are checkpointed into the database before the pool is disposed; otherwise they are lost and
      other readers fail with "disk I/O error" until every handle is closed.
    - **read-only** (`os.access`; for root, only `chattr +i` or a read-only mount): the pool is disposed so
      writes fail and are retried, and again once it is writable, so they resume.

    Not thread-safe: one writer thread uses it.
    """

    def __init__(self, engine: sa.Engine, path: Path) -> None:
        self._engine = engine
        self.path = path.absolute()
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._shm = self.path.with_name(self.path.name + "-shm")
        self._identity = _file_identity(self.path)
        # The -wal and -shm our connections have open, seen after a write; empty until then.
        self._sides: dict[Path, tuple[int, int] | None] = {}
        self._writable = True

    @classmethod
    def of(cls, engine: sa.Engine) -> SqliteFileWatch | None:
        """A watch for a file-backed SQLite engine; None for PostgreSQL and in-memory databases."""
        if engine.url.get_backend_name() != "sqlite":
            return None
        path = _sqlite_path(engine.url.database)
        return None if path is None else cls(engine, path)

    def before_write(self) -> None:
        """Point the engine at the file now at the path. Raises DatabaseError if that fails (retry later)."""
        identity = _file_identity(self.path)
        if identity is None or identity != self._identity:
            self._recreate(identity)
            return
        wal = self._sides.get(self._wal)
        if wal is not None and _file_identity(self._wal) != wal:
            self._rescue_wal()
        writable = os.access(self.path, os.W_OK)
        if writable != self._writable:
            if writable:
                log.warning("recorder: the database file %s is writable again", self.path)
            else:
                log.warning(
                    "recorder: the database file %s is read-only; retrying until it is not", self.path
                )
            self._writable = writable
            self._reopen()

    def after_write(self) -> bool:
        """False when the file was deleted or replaced during the transaction: it did not land at the path."""
        if _file_identity(self.path) != self._identity:
            return False
        if not self._sides:
            self._sides = {side: _file_identity(side) for side in (self._wal, self._shm)}
        return True

    def _reopen(self) -> None:
        self._engine.dispose()
        self._sides = {}

    def _recreate(self, identity: tuple[int, int] | None) -> None:
        if identity is None:
            log.warning(
                "recorder: the database file %s is gone; creating a new one (what the old one held is lost)",
                self.path,
            )
        else:
            log.warning("recorder: the database file %s was replaced; writing into the new one", self.path)
        sides = self._sides
        self._reopen()
        for side, seen in sides.items():
            if seen is not None and _file_identity(side) == seen:
                try:
                    side.unlink(missing_ok=True)
                except OSError as e:
                    raise DatabaseError(f"cannot remove the old file's {side}: {e.strerror}") from e
        upgrade(self._engine)
        self._identity = _file_identity(self.path)
        self._writable = os.access(self.path, os.W_OK)

    def _rescue_wal(self) -> None:
        log.warning(
            "recorder: the write-ahead log %s was deleted; checkpointing what it held into the database",
            self._wal,
        )
        try:
            with self._engine.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
        except sa.exc.DBAPIError as e:
            raise DatabaseError(f"cannot checkpoint {self.path}: {describe_error(e)}") from e
        if busy:
            raise DatabaseError(f"cannot checkpoint {self.path}: a reader is busy")
        self._reopen()


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None when there is none.

    Inode numbers are reused, but only once nothing holds the old file open: the engine's pooled connections
    hold it from one check to the next, so a different file at the path has a different identity.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # a directory we may no longer search: unavailable until it is fixed
        raise DatabaseError(f"cannot see the database file {path}: {e.strerror}") from e
    return st.st_dev, st.st_ino
