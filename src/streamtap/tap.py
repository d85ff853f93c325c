"""The tap for one exchange: response bytes in (with their arrival times), a `StreamRecord` out.

Stages: content decoding -> SSE decoding -> provider semantics. Pure: the caller passes `time.monotonic()`
readings; nothing here touches the network, the database or mitmproxy.
"""

from __future__ import annotations

from typing import Any

from .chat import error_text
from .decoding import Decoder, make_decoder
from .interpreters import Interpreter, api_name, interpreter_for
from .records import EventLog, Outcome, StreamRecord, StreamStart
from .semantics import Interpretation, loads
from .sse import ItemKind, SSEDecoder, SSEItem

MAX_STORED_BODY = 1 << 20  # non-streamed bodies (completions, error bodies) are stored up to 1 MiB


def decide_outcome(
    *,
    status_code: int | None,
    model_error: bool,
    finished: bool,
    disconnect: Outcome | None,
) -> Outcome:
    """When several apply, the first wins: http_error > model_error > completed > disconnect > truncated.

    `completed` outranks a disconnect because SDKs hang up right after `[DONE]`, often before the body's
    last bytes: that is not a disconnect.
    """
    if status_code is not None and status_code >= 400:
        return Outcome.HTTP_ERROR
    if model_error:
        return Outcome.MODEL_ERROR
    if finished:
        return Outcome.COMPLETED
    if disconnect is not None:
        return disconnect
    return Outcome.TRUNCATED


def _ms(t: float, t0: float) -> float:
    return (t - t0) * 1000.0


class StreamTap:
    """Created when the proxy has the whole client request (t0); fed the response; finished once."""

    __slots__ = (
        "_body",
        "_datas",
        "_decoder",
        "_last_t",
        "_raws",
        "_rows",
        "_size",
        "_sse",
        "chat",
        "content_encoding",
        "is_sse",
        "last_byte",
        "start",
        "status_code",
        "t0",
        "tap_errors",
        "ttfb",
        "ttfc",
        "ttft",
    )

    def __init__(self, start: StreamStart, t0: float) -> None:
        self.start = start
        self.t0 = t0
        self.chat: Interpreter = interpreter_for(start.path)
        self.status_code: int | None = None
        self.content_encoding: str | None = None
        self.is_sse = False
        self.ttfb: float | None = None
        self.ttft: float | None = None
        self.ttfc: float | None = None
        self.last_byte: float | None = None
        self.tap_errors = 0
        self._decoder: Decoder | None = None
        self._sse: SSEDecoder | None = None
        # the events so far, as `EventLog` keeps them: a row each in the event pack's layout, bytes, data
        self._rows: list[tuple[Any, ...]] = []
        self._raws: list[bytes] = []
        self._datas: list[str | None] = []
        self._size = 0  # bytes of all events so far: where the next one starts in the body
        self._last_t: float | None = None
        self._body = bytearray()  # non-SSE bodies only, capped

    # -- the response ----------------------------------------------------------------------------------
    def response_headers(
        self, now: float, status_code: int, content_type: str, content_encoding: str | None
    ) -> None:
        self.ttfb = now
        self.status_code = status_code
        self.content_encoding = content_encoding or None
        self.is_sse = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        self._decoder = make_decoder(content_encoding)
        if self.is_sse:
            self._sse = SSEDecoder()

    def feed(self, chunk: bytes | bytearray | memoryview, now: float) -> None:
        """One network read of the (encoded) body, as mitmproxy hands it over."""
        if not chunk:
            return
        self.last_byte = now
        assert self._decoder is not None, "response_headers() first"
        # bytes, as the proxy's messages carry them; anything else is copied (and never changed)
        data = self._decoder.feed(chunk if type(chunk) is bytes else bytes(chunk))
        sse = self._sse
        if sse is None:
            self._keep_body(data)
        elif data:
            text = sse.lone_data(data)
            if text is None:
                self._items(sse.feed(data), now)
            else:  # one whole unnamed event, as most reads are: no SSE item made for it
                self._event(self.chat.feed_data(text), text, data, None, now)

    def end_of_body(self, now: float) -> None:
        """The body ended cleanly (or was cut: `finish` tells). Flushes every stage."""
        if self._decoder is None:
            return
        data = self._decoder.flush()
        decoder, self._decoder = self._decoder, None
        del decoder
        if self._sse is None:
            self._keep_body(data)
            return
        items = self._sse.feed(data) if data else []
        items += self._sse.flush()
        self._sse = None
        self._items(items, self.last_byte if self.last_byte is not None else now)

    def whole_body(self, body: bytes | bytearray, now: float) -> None:
        """A response mitmproxy buffered (not an event stream): the body, already content-decoded."""
        self.last_byte = now
        self._body = bytearray(body[:MAX_STORED_BODY])
        self._decoder = None
        if self.status_code is not None and self.status_code < 400:
            try:
                obj = loads(bytes(body))
            except (ValueError, RecursionError):
                return
            if isinstance(obj, dict):
                self.chat.feed_completion(obj)

    def _keep_body(self, data: bytes) -> None:
        room = MAX_STORED_BODY - len(self._body)
        if room > 0 and data:
            self._body += data[:room]

    def _items(self, items: list[SSEItem], now: float) -> None:
        if not items:
            return
        rows = self._rows
        feed = self.chat.feed
        for item in items:
            kind, raw, text, event = item[:4]  # SSEItem's first fields, unpacked once
            data: str | None = text
            if kind is ItemKind.PADDING:
                if rows:
                    # blank lines after the last event belong to it (alone, they are all the body had)
                    *fields, end = rows[-1]
                    rows[-1] = (*fields, end + len(raw))
                    # a new object: a caller's bytearray stays as it was
                    self._raws[-1] = self._raws[-1] + raw
                    self._size += len(raw)
                    continue
                data = None
            self._event(feed(item), data, raw, event, now)

    def _event(
        self,
        meaning: Interpretation,
        data: str | None,
        raw: bytes,
        event: str | None,
        now: float,
    ) -> None:
        """Records one event (or comment) that arrived at `now`. Every item of one read arrived then: the
        first one's gap is since the previous read, the others' is 0 (now - now)."""
        last = self._last_t
        gap = None if last is None else (now - last) * 1000.0
        self._last_t = now
        tokens = meaning.tokens
        if tokens and self.ttft is None:
            self.ttft = now
        if meaning.content and self.ttfc is None:
            self.ttfc = now
        start = self._size
        self._size = end = start + len(raw)
        self._rows.append(((now - self.t0) * 1000.0, gap, meaning.kind, event, tokens, start, end))
        self._raws.append(raw)
        self._datas.append(data)

    # -- the end -------------------------------------------------------------------------------------
    def finish(
        self, now: float, *, disconnect: Outcome | None = None, reason: str | None = None
    ) -> StreamRecord:
        """Build the record. `disconnect` and `reason` come from mitmproxy's error hook, if it fired."""
        if self._decoder is not None:
            try:
                self.end_of_body(now)
            except Exception:  # a body cut mid-way may not flush cleanly; what was decoded stays
                self.tap_errors += 1
        start = self.start
        chat = self.chat
        status = self.status_code
        body_text = bytes(self._body).decode("utf-8", "replace") if self._body else None
        error: str | None = None
        if status is not None and status >= 400:
            error = self._http_error_text(body_text)
        elif chat.error is not None:
            error = chat.error
        elif disconnect is not None and reason and not (chat.saw_finish or chat.saw_done):
            error = reason  # a hang-up after the end is no error
        outcome = decide_outcome(
            status_code=status,
            model_error=chat.error is not None,
            finished=chat.saw_finish or chat.saw_done,
            disconnect=disconnect,
        )
        t0 = self.t0
        end = self.last_byte if self.last_byte is not None else (now if disconnect is None else None)
        return StreamRecord(
            id=start.id,
            started_at=start.started_at,
            method=start.method,
            url=start.url,
            host=start.host,
            path=start.path,
            status_code=status,
            stream=self.is_sse,
            request_model=start.request_model,
            model=chat.model,
            outcome=outcome,
            error=error,
            ttfb_ms=None if self.ttfb is None else _ms(self.ttfb, t0),
            ttft_ms=None if self.ttft is None else _ms(self.ttft, t0),
            ttfc_ms=None if self.ttfc is None else _ms(self.ttfc, t0),
            duration_ms=None if end is None else _ms(end, t0),
            usage=chat.usage,
            choices=chat.choices(),
            events=EventLog(self._rows, self._raws, self._datas) if self._rows else (),
            api_key_fp=start.api_key_fp,
            proxy_instance=start.proxy_instance,
            api=api_name(start.path),
            content_encoding=self.content_encoding,
            request_body=start.request_body,
            response_body=None if self.is_sse else body_text,
            tap_errors=self.tap_errors,
        )

    def _http_error_text(self, body_text: str | None) -> str:
        status = self.status_code
        if self.chat.error is not None:
            return self.chat.error
        if body_text:
            try:
                obj: Any = loads(body_text)
            except (ValueError, RecursionError):
                return f"HTTP {status}: {body_text.strip()[:2000]}"
            return f"HTTP {status}: {error_text(obj)}"
        if self._raws:
            # an error body served as text/event-stream (Gemini does this): JSON, not SSE framed
            text = b"".join(self._raws).decode("utf-8", "replace").strip()
            try:
                return f"HTTP {status}: {error_text(loads(text))}"
            except (ValueError, RecursionError):
                return f"HTTP {status}: {text[:2000]}"
        return f"HTTP {status}"
