"""Storage: ORM models, the engine factory and the Alembic migration runner."""

from .engine import DEFAULT_DB_URL, check_schema, make_engine, upgrade
from .models import Base, Stream, StreamEventPack

__all__ = ["DEFAULT_DB_URL", "Base", "Stream", "StreamEventPack", "check_schema", "make_engine", "upgrade"]
