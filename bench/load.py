"""A lean load client: raw asyncio protocol, HTTP/1.1 keep-alive, one timestamp per network read.

Each connection runs one exchange at a time. `data_received` reads `time.monotonic()` first, then splits
the (chunked) body and notes, for every event completed by that read, the read's time. Events are counted
by the blank line that ends them (`\\n\\n`, what the mock and OpenAI send), so event k here is event k
of the upstream's send log.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PROMPT = [{"role": "user", "content": "Say hello in a few words."}]


@dataclass(slots=True)
class StreamResult:
    """What the client saw of one streamed completion."""

    t_send: float  # just before the request was written
    status: int = 0
    cid: str = ""  # x-mock-completion-id, or the `id` of the first data event
    events: list[float] = field(default_factory=list)  # receive time of each event
    body: bytes = b""  # de-chunked body (kept only when asked)
    error: str | None = None


class _Body:
    """De-chunks an HTTP/1.1 body incrementally and finds event ends."""

    __slots__ = ("body", "chunked", "done", "left", "raw", "scan", "size")

    def __init__(self, chunked: bool, length: int | None) -> None:
        self.raw = bytearray()  # framed bytes not yet parsed
        self.body = bytearray()
        self.chunked = chunked
        self.left = -1  # bytes of the current chunk still expected (+2 for its CRLF); -1: a size line
        self.size = length
        self.scan = 0
        self.done = False

    def feed(self, data: bytes | bytearray) -> None:
        if not self.chunked:
            self.body += data
            if self.size is not None and len(self.body) >= self.size:
                self.done = True
            return
        raw = self.raw
        raw += data
        pos = 0
        n = len(raw)
        while pos < n:
            if self.left < 0:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(raw[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.done = True  # trailers are not used by anyone here
                    pos = n
                    break
                self.left = size + 2
            take = min(self.left, n - pos)
            chunk_end = pos + take
            payload_end = min(chunk_end, pos + max(0, self.left - 2))
            self.body += raw[pos:payload_end]
            self.left -= take
            pos = chunk_end
            if self.left == 0:
                self.left = -1
        del raw[:pos]


def dechunk(wire: bytes) -> bytes:
    """The body of a whole HTTP/1.1 response as written on the wire (head and chunk framing removed)."""
    head, _, rest = wire.partition(b"\r\n\r\n")
    chunked = b"transfer-encoding: chunked" in head.lower()
    b = _Body(chunked, None)
    b.feed(rest)
    return bytes(b.body)


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.result: StreamResult | None = None
        self.done: asyncio.Future[None] | None = None
        self.head = bytearray()
        self.body: _Body | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self, request: bytes, result: StreamResult) -> asyncio.Future[None]:
        assert self.transport is not None
        self.result = result
        self.head = bytearray()
        self.body = None
        self.done = asyncio.get_running_loop().create_future()
        result.t_send = time.monotonic()
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        res = self.result
        if res is None or self.done is None or self.done.done():
            return
        if self.body is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            rest = bytes(self.head[end + 4 :])
            res.status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            # LiteLLM renames the upstream's headers `llm_provider-*`
            res.cid = headers.get("x-mock-completion-id") or headers.get(
                "llm_provider-x-mock-completion-id", ""
            )
            self.keep_alive = headers.get("connection", "").lower() != "close"
            length = headers.get("content-length")
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            self.body = _Body(chunked, None if chunked or length is None else int(length))
            data = rest
        body = self.body
        body.feed(data)
        buf = body.body
        events = res.events
        while (i := buf.find(b"\n\n", body.scan)) >= 0:
            events.append(now)
            body.scan = i + 2
        if body.done:
            self._finish()

    def _finish(self) -> None:
        res, body = self.result, self.body
        assert res is not None and body is not None and self.done is not None
        res.body = bytes(body.body)
        if not res.cid:
            res.cid = _first_id(res.body)
        self.result = None
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.result is not None and self.done is not None and not self.done.done():
            if self.body is not None and not self.body.chunked and self.body.size is None:
                self._finish()  # a body delimited by the end of the connection
            else:
                self.result.error = f"connection lost: {exc!r}"
                self.done.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)


def _first_id(body: bytes) -> str:
    for line in body.split(b"\n"):
        if line.startswith(b"data:") and b"[DONE]" not in line:
            try:
                obj = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                return str(obj["id"])
    return ""


def build_request(
    url: str,
    *,
    chunks: int,
    gap_ms: float,
    ttft_ms: float,
    model: str = "mock-gpt",
    path: str = "/v1/chat/completions",
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    parts = urlsplit(url)
    body = json.dumps({"model": model, "messages": PROMPT, "stream": True}).encode()
    headers = {
        "host": parts.netloc,
        "content-type": "application/json",
        "accept": "text/event-stream",
        "authorization": "Bearer sk-bench",
        "content-length": str(len(body)),
        "x-mock-chunks": str(chunks),
        "x-mock-gap-ms": f"{gap_ms:g}",
        "x-mock-ttft-ms": f"{ttft_ms:g}",
        **(extra_headers or {}),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


@dataclass
class Load:
    """`concurrency` workers, each a keep-alive connection running streams back to back.

    With `warm` (a short request), every worker first opens its connection and completes one `warm`
    exchange, not recorded, and the measured part starts when all have: the proxy's per-connection set-up
    is not measured as event latency. Each worker then waits a random part of `stagger` seconds (one
    stream's length spreads the streams evenly over time) and starts streams until `duration` seconds
    have passed or `streams` were started in all, whichever comes first. `started_at` is when the measured
    part began.
    """

    url: str
    request: bytes
    concurrency: int
    duration: float | None = None
    streams: int | None = None
    stagger: float = 0.0
    warm: bytes | None = None
    keep_body: bool = False
    keep_results: bool = True
    seed: int = 1
    on_start: Callable[[], None] | None = None  # called once when the measured part begins
    results: list[StreamResult] = field(default_factory=list)
    started: int = 0
    completed: int = 0
    errors: int = 0
    started_at: float = 0.0

    async def _connect(self) -> _Conn:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        _, conn = await asyncio.get_running_loop().create_connection(_Conn, host, port)
        return conn

    async def _exchange(self, conn: _Conn | None, request: bytes) -> tuple[_Conn | None, StreamResult]:
        if conn is None or conn.closed.done() or not conn.keep_alive:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            conn = await self._connect()
        res = StreamResult(0.0)
        await conn.start(request, res)
        if res.error is not None or res.status != 200:
            if conn.transport is not None:
                conn.transport.close()
            conn = None
        return conn, res

    async def _worker(self, ready: asyncio.Barrier, delay: float) -> None:
        conn: _Conn | None = None
        try:
            if self.warm is not None:
                conn, _ = await self._exchange(None, self.warm)
            if await ready.wait() == 0:
                self.started_at = time.monotonic()
                if self.on_start is not None:
                    self.on_start()
            await asyncio.sleep(delay)
            deadline = None if self.duration is None else self.started_at + self.duration
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if self.streams is not None and self.started >= self.streams:
                    return
                self.started += 1
                conn, res = await self._exchange(conn, self.request)
                self.completed += 1
                if res.error is not None or res.status != 200:
                    self.errors += 1
                if not self.keep_body:
                    res.body = b""
                if self.keep_results:
                    self.results.append(res)
        finally:
            if conn is not None and conn.transport is not None:
                conn.transport.close()

    async def run(self) -> Load:
        rng = random.Random(self.seed)
        delays = [rng.uniform(0, self.stagger) for _ in range(self.concurrency)]
        ready = asyncio.Barrier(self.concurrency)
        await asyncio.gather(*(self._worker(ready, d) for d in delays))
        return self


def run_load(**kwargs: object) -> Load:
    """Run a `Load` on a fresh event loop (the caller is not async)."""
    load = Load(**kwargs)  # type: ignore[arg-type]
    return asyncio.run(load.run())
