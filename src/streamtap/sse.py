"""An incremental Server-Sent Events decoder that keeps every byte.

It follows the WHATWG HTML Living Standard, section 9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation), and adds one
thing a browser does not need: every item it returns carries the exact bytes it was decoded from, so the
concatenation of the items' `raw` (plus a final `flush()`) is the input, byte for byte.

Feed it bytes as they arrive from the network, in reads of any size; splitting the input differently never
changes what it returns.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_SPACE = 0x20
_new = tuple.__new__


class ItemKind(enum.StrEnum):
    EVENT = "event"  # a dispatched event
    COMMENT = "comment"  # a line starting with ':'
    INCOMPLETE = "incomplete"  # fields or a partial line left at end of stream: never dispatched
    PADDING = "padding"  # blank lines left at end of stream, belonging to no event


class SSEItem(NamedTuple):
    """One item of the stream. A named tuple (immutable): the decoder makes one per event, and a tuple is
    the cheapest immutable object Python makes (`_new` builds it without NamedTuple's argument handling)."""

    kind: ItemKind
    raw: bytes
    data: str = ""  # event data (lines joined with LF), or the comment text
    event: str | None = None  # the `event:` field; None means the default type, "message"
    id: str | None = None  # the last event ID in force when the event was dispatched
    retry: int | None = None  # a `retry:` field seen in this event


class SSEDecoder:
    """Bytes in, `SSEItem`s out. `feed()` as reads arrive, `flush()` once at end of stream."""

    __slots__ = ("_buf", "_data", "_event", "_fields", "_last_id", "_raw", "_retry", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes of the line not yet terminated
        self._raw = bytearray()  # bytes of complete lines since the last item returned
        self._data: list[str] = []
        self._event: str | None = None
        self._last_id: str | None = None  # persists across events, as the spec says
        self._retry: int | None = None
        self._fields = False  # field lines seen since the last dispatch: an event is being built
        self._started = False  # the BOM check has been made

    def lone_data(self, chunk: bytes) -> str | None:
        """The data of `chunk` if it is exactly one `data:` line and its blank line, with nothing pending: how
        most reads of a stream arrive. Then `feed(chunk)` would return one event with that data, no `event:`
        field and the current last event ID, and change nothing else, so a caller may take this instead.
        None otherwise (and nothing happened: `feed` it)."""
        if (
            chunk.startswith(b"data:")
            and chunk.find(b"\n") == len(chunk) - 2  # the first line feed of exactly two, at the end
            and chunk.endswith(b"\n\n")
            and _CR not in chunk  # an int: `bytes in bytes` first tries the needle as an int, and fails
            and self._started
            and not self._buf
            and not self._fields
            and not self._raw
        ):
            value = chunk[6:-2] if chunk[5] == _SPACE else chunk[5:-2]
            return value.decode("utf-8", "replace")
        return None

    def feed(self, read: bytes | bytearray) -> list[SSEItem]:
        if not read:
            return []
        chunk = read if type(read) is bytes else bytes(read)  # a caller's bytearray: copied, never changed
        data = self.lone_data(chunk)
        if data is not None:
            return [_new(SSEItem, (ItemKind.EVENT, chunk, data, None, self._last_id, None))]
        buf = self._buf
        buf += chunk
        if not self._started:
            # "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."
            if len(buf) < len(_BOM) and _BOM.startswith(bytes(buf)):
                return []
            self._started = True
            skip = len(_BOM) if buf.startswith(_BOM) else 0
            if skip:
                self._raw += _BOM
                del buf[:skip]
        if _CR not in buf:
            return self._feed_lf(buf)
        out: list[SSEItem] = []
        start = 0
        n = len(buf)
        for match in _LINE_END.finditer(buf):
            end = match.start()
            if end < start:  # the LF of a CRLF pair already consumed
                continue
            if buf[end] == _CR:
                if end + 1 == n:
                    break  # hold a trailing CR: the next read may start with its LF
                stop = end + 2 if buf[end + 1] == _LF else end + 1
            else:
                stop = end + 1
            self._line(bytes(buf[start:end]), buf[start:stop], out)
            start = stop
        if start:
            del buf[:start]
        return out

    def _feed_lf(self, buf: bytearray) -> list[SSEItem]:
        """`feed` when the buffer holds no CR, as nearly every server sends it: then only LF ends a line
        ("a single U+000A LINE FEED (LF) character", WHATWG HTML 9.2.5), and each item's bytes are one slice
        of the buffer, cut once instead of line by line. Returns exactly what the general path would."""
        out: list[SSEItem] = []
        find = buf.find
        start = 0  # the next line
        taken = 0  # bytes before this are in items already returned, or in `_raw`
        while (end := find(b"\n", start)) >= 0:
            stop = end + 1
            if end == start:  # a blank line: dispatch
                self._fields = False
                if self._data:
                    out.append(
                        _new(
                            SSEItem,
                            (
                                ItemKind.EVENT,
                                self._take_raw_to(buf, taken, stop),
                                "\n".join(self._data),
                                self._event or None,
                                self._last_id,
                                self._retry,
                            ),
                        )
                    )
                    taken = stop
                    self._data = []
                # else: "set the data buffer and the event type buffer to the empty string and return";
                # the blank line's bytes stay with the next item
                self._event = None
                self._retry = None
            else:
                text = buf[start:end].decode("utf-8", "replace")
                if text[0] == ":":
                    comment = text[1:]
                    if comment.startswith(" "):
                        comment = comment[1:]
                    if self._fields:  # inside an event: its bytes stay with the event (see `_line`)
                        raw = b""
                    else:
                        raw = self._take_raw_to(buf, taken, stop)
                        taken = stop
                    out.append(SSEItem(ItemKind.COMMENT, raw, comment))
                else:
                    self._field(text)
            start = stop
        if taken < start:
            self._raw += buf[taken:start]
        if start:
            del buf[:start]
        return out

    def _take_raw_to(self, buf: bytearray, taken: int, stop: int) -> bytes:
        """The pending item's bytes: what `_raw` holds from earlier reads, then `buf[taken:stop]`."""
        if self._raw:
            self._raw += buf[taken:stop]
            return self._take_raw()
        return bytes(buf[taken:stop])

    def flush(self) -> list[SSEItem]:
        """End of stream. A trailing CR ends its line; an unterminated line or event is not dispatched."""
        out: list[SSEItem] = []
        buf = self._buf
        if buf.endswith(b"\r"):
            self._line(bytes(buf[:-1]), buf, out)
            buf.clear()
        pending = bytes(self._raw) + bytes(buf)
        if pending:
            pending_fields = bool(buf) or bool(self._data) or self._event is not None
            if pending_fields or pending.strip(b"\r\n"):
                out.append(SSEItem(ItemKind.INCOMPLETE, pending, pending.decode("utf-8", "replace")))
            else:
                out.append(SSEItem(ItemKind.PADDING, pending))
        self._raw.clear()
        buf.clear()
        self._data = []
        self._event = None
        self._retry = None
        self._fields = False
        return out

    def _line(self, line: bytes, raw: bytes | bytearray, out: list[SSEItem]) -> None:
        self._raw += raw
        if not line:
            self._dispatch(out)
            return
        # Decode each whole line, so a character split across reads is never mangled; invalid sequences
        # become U+FFFD as the spec's "UTF-8 decode" does.
        text = line.decode("utf-8", "replace")
        if text[0] == ":":
            comment = text[1:]
            if comment.startswith(" "):
                comment = comment[1:]
            # A comment inside an event keeps no bytes of its own: they stay in the event's raw, which is
            # one contiguous range of the input, so the items' raw still concatenate to the input.
            out.append(SSEItem(ItemKind.COMMENT, b"" if self._fields else self._take_raw(), comment))
            return
        self._field(text)

    def _field(self, text: str) -> None:
        self._fields = True
        name, colon, value = text.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # past 18 digits no client's 64-bit integer holds it (and past 4,300 int() refuses): ignored
            digits = value.lstrip("0") or "0"
            self._retry = int(digits) if len(digits) <= 18 else None
        # any other field name is ignored, as the spec says

    def _dispatch(self, out: list[SSEItem]) -> None:
        self._fields = False
        if not self._data:
            # "If the data buffer is an empty string, set the data buffer and the event type buffer to the
            # empty string and return." The blank line's bytes stay with the next item.
            self._event = None
            self._retry = None
            return
        out.append(
            SSEItem(
                ItemKind.EVENT,
                self._take_raw(),
                "\n".join(self._data),
                self._event or None,
                self._last_id,
                self._retry,
            )
        )
        self._data = []
        self._event = None
        self._retry = None

    def _take_raw(self) -> bytes:
        raw = bytes(self._raw)
        self._raw.clear()
        return raw


def decode_all(body: bytes | bytearray) -> list[SSEItem]:
    """Decode a whole body at once (tests, import, export)."""
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.flush()
