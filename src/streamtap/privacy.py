"""What is never stored: credentials. Keys become short fingerprints; secret query values are redacted."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .records import EventLog, EventRecord, StreamRecord, StreamStart

# Header names that carry credentials (lower case). Their values are never stored.
KEY_HEADERS = ("authorization", "api-key", "x-api-key", "x-goog-api-key", "proxy-authorization")
_SECRET_PARAM = re.compile(r"(key|token|secret|sig|signature|password|auth|credential)", re.IGNORECASE)
REDACTED = "REDACTED"


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible id for an API key: the first 12 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:12]


def _bearer(value: str) -> str:
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if rest and scheme.lower() in ("bearer", "basic", "token") else value.strip()


def api_key_fingerprint(
    headers: Mapping[str, str], query: Iterable[tuple[str, str]] | Mapping[str, str] = ()
) -> str | None:
    """The fingerprint of the first credential found in the request's headers or query string."""
    for name in KEY_HEADERS[:4]:
        value = headers.get(name)
        if value:
            key = _bearer(value) if name == "authorization" else value.strip()
            if key:
                return fingerprint(key)
    items = query.items() if isinstance(query, Mapping) else query
    for name, value in items:
        if value and _SECRET_PARAM.search(name):
            return fingerprint(value)
    return None


def redact_url(url: str) -> str:
    """The URL with user info dropped and the values of secret-looking query parameters replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def strip_content(record: StreamRecord) -> StreamRecord:
    """`--capture metadata`: timings, models, usage and outcomes stay; prompt and completion text go.

    Event rows keep their timing, kind and whether they carried tokens; their bytes are dropped. Tool calls
    keep their id and name (which tool was called) but not their arguments.
    """
    return dataclasses.replace(
        record,
        request_body=None,
        response_body=None,
        choices=tuple(
            dataclasses.replace(
                c,
                content=None,
                reasoning_content=None,
                refusal=None,
                tool_calls=tuple(dataclasses.replace(t, arguments="") for t in c.tool_calls),
            )
            for c in record.choices
        ),
        events=_without_bytes(record.events),
    )


def _without_bytes(events: Sequence[EventRecord]) -> Sequence[EventRecord]:
    if type(events) is EventLog:  # the tap's: stays one, so the recorder stores it as fast
        n = len(events)
        return EventLog([(*row[:5], 0, 0) for row in events.rows], [b""] * n, [None] * n)
    return tuple(e._replace(raw=b"", data=None) for e in events)


def strip_start(start: StreamStart) -> StreamStart:
    return dataclasses.replace(start, request_body=None)
