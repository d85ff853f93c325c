"""What the proxy's hooks observe, as messages, and the interpretation of those messages into records.

The proxy's event loop only stamps and forwards: each hook turns what it saw into one small tuple (the
`START`...`END` messages below) and hands it on; the response body's chunks travel as they were read, with
their arrival times. `Pipeline` replays those messages through a `StreamTap` per exchange and hands starts
and finished records on (recorder, metrics). It runs in the worker process (`streamtap.worker`), so none of
the decoding, parsing or database work shares the proxy's interpreter.

Messages are plain tuples of str/float/int/bytes/None (cheap to marshal), the first item one of:
    (START, key, t0, started_epoch, method, url, host, path, api_key_fp, request_body)
    (HEADERS, key, now, status_code, content_type, content_encoding)
    (CHUNK, key, now, chunk)             a network read of the body; b"" marks its clean end
    (BODY, key, now, content)            a response mitmproxy buffered (not an event stream), decoded
    (END, key, now, disconnect, reason)  the exchange is over; disconnect: an Outcome value or None
    (TAP_ERROR, where)                   the proxy's own side failed on an exchange (counted)
    (LOST, n)                            the proxy dropped `n` messages it could not hand over
`url` is already redacted and `api_key_fp` already a fingerprint: credentials never leave the proxy.
`request_body` is whole up to `MAX_PARSED_BODY` (the worker reads the model from it), else its first MiB.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from .metrics import Metrics
from .privacy import strip_content, strip_start
from .records import Outcome, StreamRecord, StreamStart
from .semantics import too_deep
from .tap import StreamTap

log = logging.getLogger("streamtap")

START, HEADERS, CHUNK, BODY, END, TAP_ERROR, LOST = range(7)

MAX_REQUEST_BODY = 1 << 20  # request bodies are stored up to 1 MiB
MAX_PARSED_BODY = 8 << 20  # and read for their `model` up to 8 MiB


def request_model(body: bytes | str | None) -> str | None:
    """The `model` of a JSON request body, if it has one.

    orjson reads it (a 560 KB prompt in 194 µs instead of 346); what orjson refuses (NaN, a lone
    surrogate's escape) goes to `json`, which is what decides. A body nested beyond orjson's 1024 levels
    has none (`json`'s own limit depends on the caller's stack: see `semantics.loads`)."""
    if not body:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if too_deep(e):
            return None
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return None
    model = obj.get("model") if isinstance(obj, dict) else None
    return model if isinstance(model, str) else None


class Pipeline:
    """Turns the proxy's messages into `StreamStart`s and `StreamRecord`s.

    `on_start` and `on_record` receive them (the recorder's `submit_start`/`submit`); `metrics`, if given,
    observes every exchange. A failure on one exchange is logged and counted with its record, and that
    exchange's remaining messages are skipped: it never affects another exchange.
    """

    def __init__(
        self,
        *,
        instance: str,
        metadata_only: bool = False,
        metrics: Metrics | None = None,
        on_start: Callable[[StreamStart], None] | None = None,
        on_record: Callable[[StreamRecord], None] | None = None,
    ) -> None:
        self.instance = instance
        self.metadata_only = metadata_only
        self.metrics = metrics
        self.on_start = on_start
        self.on_record = on_record
        self._taps: dict[str, StreamTap] = {}
        self._broken: set[str] = set()

    @property
    def open_streams(self) -> int:
        return len(self._taps)

    def handle(self, messages: Iterable[tuple[Any, ...]]) -> None:
        taps = self._taps
        broken = self._broken
        for msg in messages:
            op = msg[0]
            if op == CHUNK:  # the common case first: no call, no lookup beyond the tap's
                tap = taps.get(msg[1])
                if tap is not None and msg[1] not in broken:
                    try:
                        if msg[3]:
                            tap.feed(msg[3], msg[2])
                        else:
                            tap.end_of_body(msg[2])
                    except Exception:
                        self._failed(msg[1], tap, "while reading the stream")
                continue
            try:
                self._control(msg)
            except Exception:
                key = msg[1] if op in (START, HEADERS, BODY, END) else None
                tap = taps.get(key) if isinstance(key, str) else None
                if isinstance(key, str) and tap is not None and key not in broken:
                    self._failed(key, tap, "while handling the exchange")
                else:
                    self._count_tap_error("while handling the exchange")

    def close(self, disconnect: Outcome, reason: str) -> None:
        """Finish every exchange still open, as `disconnect` (the proxy is gone)."""
        for key in list(self._taps):
            try:
                self._end(key, None, disconnect, reason)
            except Exception:  # one record failing must not leave the others open
                self._count_tap_error("while finishing the record")

    # -- the messages ----------------------------------------------------------------------------------
    def _control(self, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == START:
            self._start(*msg[1:])
        elif op == HEADERS:
            _, key, now, status_code, content_type, content_encoding = msg
            tap = self._taps.get(key)
            if tap is not None and key not in self._broken:
                tap.response_headers(now, status_code, content_type, content_encoding)
        elif op == BODY:
            _, key, now, content = msg
            tap = self._taps.get(key)
            if tap is not None and key not in self._broken:
                tap.whole_body(content, now)
        elif op == END:
            _, key, now, disconnect, reason = msg
            self._end(key, now, Outcome(disconnect) if disconnect else None, reason)
        elif op == TAP_ERROR:
            log.error("streamtap: tap error in the proxy %s (the client's stream is unaffected)", msg[1])
            if self.metrics is not None:
                self.metrics.tap_error()
        elif op == LOST:
            self._lost(msg[1])
        else:
            raise ValueError(f"unknown message {op!r}")

    def _start(
        self,
        key: str,
        t0: float,
        started_epoch: float,
        method: str,
        url: str,
        host: str,
        path: str,
        api_key_fp: str | None,
        body: bytes | None,
    ) -> None:
        model = request_model(body) if body and len(body) <= MAX_PARSED_BODY else None
        start = StreamStart(
            id=key,
            started_at=datetime.fromtimestamp(started_epoch, UTC),
            method=method,
            url=url,
            host=host,
            path=path,
            request_model=model,
            api_key_fp=api_key_fp,
            proxy_instance=self.instance,
            request_body=body[:MAX_REQUEST_BODY].decode("utf-8", "replace") if body else None,
        )
        self._taps[key] = StreamTap(start, t0)
        if self.metrics is not None:
            self.metrics.stream_started(model, host)
        if self.on_start is not None:
            self.on_start(strip_start(start) if self.metadata_only else start)

    def _end(self, key: str, now: float | None, disconnect: Outcome | None, reason: str | None) -> None:
        tap = self._taps.pop(key, None)
        self._broken.discard(key)
        if tap is None:
            return
        if now is None:  # closing without the proxy: the last thing it saw is as good as it gets
            now = tap.last_byte or tap.ttfb or tap.t0
        try:
            record = tap.finish(now, disconnect=disconnect, reason=reason)
        except Exception:
            if self.metrics is not None:
                self.metrics.active.dec()
            self._count_tap_error("while finishing the record")
            return
        if self.metrics is not None:
            self.metrics.stream_finished(record)
            for _ in range(record.tap_errors):
                self.metrics.tap_error()
        if self.on_record is not None:
            self.on_record(strip_content(record) if self.metadata_only else record)

    def _failed(self, key: str, tap: StreamTap, where: str) -> None:
        """A bug in the tap: logged now, counted with the record; the rest of this body is skipped."""
        tap.tap_errors += 1
        self._broken.add(key)
        log.exception("streamtap: tap error %s (the client's stream is unaffected)", where)

    def _lost(self, n: int) -> None:
        """The proxy dropped `n` messages: every open exchange may miss some, so each is finished now."""
        log.error(
            "streamtap: %d observations were dropped before interpretation (the worker fell behind); "
            "the %d open streams are recorded as interrupted, with a tap error",
            n,
            len(self._taps),
        )
        for key, tap in self._taps.items():
            if key not in self._broken:
                tap.tap_errors += 1
        self.close(Outcome.INTERRUPTED, "recording incomplete: observations were dropped")

    def _count_tap_error(self, where: str) -> None:
        log.exception("streamtap: tap error %s (the client's stream is unaffected)", where)
        if self.metrics is not None:
            self.metrics.tap_error()
