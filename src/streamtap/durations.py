"""Durations as people type them: 90s, 15m, 1h, 7d, 2w."""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h', '7d', '2w' (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"bad duration {text!r}: use e.g. 90s, 15m, 1h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
