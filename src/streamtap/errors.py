"""Every error streamtap raises on purpose. The CLI turns these into one-line messages."""

from __future__ import annotations


class StreamtapError(Exception):
    """Base class: an expected failure with a message fit for a user."""


class ConfigError(StreamtapError):
    """A bad option or argument (URL, duration, port...)."""


class DatabaseError(StreamtapError):
    """The database cannot be reached or used."""


class NotOurDatabaseError(DatabaseError):
    """The database holds tables that streamtap did not create (or a schema newer than this version)."""


class NotFoundError(StreamtapError):
    """A stream id that is not in the database."""
