"""A simulated OpenAI-compatible provider: HTTP/1.1 on asyncio + h11, streaming with observable timing.

What to answer is decided up front by `mock_chat.plan_chat` (pure); this module only writes it out on
time and records when each event actually left (`MockUpstream.log`), so tests and benchmarks can compare
what the client or the proxy saw with what was sent. Times are `time.monotonic()`, which is
CLOCK_MONOTONIC on Linux and so comparable across processes on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import logging
import secrets
import signal
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Self

import h11

from streamtap import mock_text
from streamtap.errors import ConfigError
from streamtap.h11server import H11Server, read_request, sleep_until, watch
from streamtap.mock_chat import MODELS, Reply, Stream, error_reply, plan_chat
from streamtap.mock_controls import PROFILES

log = logging.getLogger(__name__)

LOG_LIMIT = 10_000
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
_JSON = (("content-type", "application/json"),)


@dataclass(slots=True)
class SentLog:
    """What the server did for one chat completion, in `time.monotonic()` seconds.

    Filled in while the response is written (so not frozen); it is complete once `finished_at` is set,
    see `MockUpstream.wait_finished`. `sends` holds (time right after the event's bytes were handed to
    the kernel, index of the event in the stream, whether it carried tokens)."""

    completion_id: str
    model: str
    stream: bool
    request_received: float
    status: int = 200
    fault: str | None = None
    sends: list[tuple[float, int, bool]] = field(default_factory=list)
    first_token_at: float | None = None
    finished_at: float | None = None
    client_gone: bool = False
    content: dict[int, str] = field(default_factory=dict)  # choice index -> text sent so far
    reasoning: dict[int, str] = field(default_factory=dict)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.request_received

    def token_gaps(self) -> list[float]:
        """Seconds between consecutive token-carrying sends."""
        times = [t for t, _, token in self.sends if token]
        return [b - a for a, b in itertools.pairwise(times)]


@dataclass(slots=True)
class _Exchange:
    conn: h11.Connection
    writer: asyncio.StreamWriter
    entry: SentLog | None
    closed: bool = False  # the connection was dropped on purpose (the `disconnect` fault)
    client_gone: bool = False
    status: int = 0


class MockUpstream(H11Server):
    """An OpenAI-compatible chat-completions server with realistic, seeded streaming and faults on demand.

    `start()` serves from a daemon thread with its own event loop (for tests and the demo); use
    `serve_forever()` to serve from a running loop instead. `log` maps completion ids (also sent back
    in the `x-mock-completion-id` header) to a `SentLog` of the last `LOG_LIMIT` chat requests.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        profile: str = "default",
        seed: int | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
        super().__init__(host, port, tls=tls)
        self.profile, self.seed = profile, seed
        self.log: dict[str, SentLog] = {}
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._error: ConfigError | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Serve from a daemon thread; returns once the socket is listening."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._until_stopped(),), daemon=True)
        self._thread.name = "streamtap-mock-upstream"
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and join the thread started by `start()`."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _until_stopped(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        serving = asyncio.create_task(self.serve_forever())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (serving, stopping):
            task.cancel()
        await asyncio.gather(serving, stopping, return_exceptions=True)
        self._ready.set()  # in case listening failed before it was set

    async def serve_forever(self) -> None:
        """Listen on `host:port` and serve until cancelled. Raises ConfigError if it cannot listen."""
        try:
            server = await self.listen()
        except ConfigError as e:
            self._error = e
            raise
        finally:
            self._ready.set()  # start() waits for listening, or for the reason it failed
        log.info("mock upstream listening on %s (profile %s)", self.url, self.profile)
        await self.serve(server)

    def wait_finished(self, completion_id: str, timeout: float = 10.0) -> SentLog:
        """The log entry of a completion once the server is done with it (the client may see the end of
        a stream a moment before the server has recorded it)."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: (e := self.log.get(completion_id)) is not None and e.finished_at is not None, timeout
            )
        if not done:
            raise TimeoutError(f"completion {completion_id} did not finish within {timeout}s")
        return self.log[completion_id]

    def _remember(self, entry: SentLog) -> None:
        with self._changed:
            while len(self.log) >= LOG_LIMIT:
                del self.log[next(iter(self.log))]
            self.log[entry.completion_id] = entry

    # -- one connection -----------------------------------------------------------------------------
    async def _one_exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it. False when the connection must close."""
        try:
            got = await read_request(conn, reader, writer)
        except h11.RemoteProtocolError as e:
            reply = error_reply(e.error_status_hint, f"Bad request: {e}", "invalid_request_error")
            await self._send_reply(_Exchange(conn, writer, None), reply, time.monotonic())
            return False
        if got is None:
            return False
        received = time.monotonic()
        request, body = got
        method, path = request.method.decode(), request.target.decode("latin-1").partition("?")[0]
        plan = self._route(method, path, request, body)
        entry = None
        if plan.completion_id:
            status = plan.status if isinstance(plan, Reply) else 200
            entry = SentLog(
                plan.completion_id, plan.model, isinstance(plan, Stream), received, status, plan.fault
            )
            self._remember(entry)
        ex = _Exchange(conn, writer, entry)
        if isinstance(plan, Stream):
            respond = asyncio.create_task(self._send_stream(ex, plan, received))
        else:
            respond = asyncio.create_task(self._send_reply(ex, plan, received))
        watching = asyncio.create_task(watch(conn, reader))
        try:
            await asyncio.wait({respond, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_left = watching.done()
            for task in (respond, watching):
                task.cancel()
            outcome = (await asyncio.gather(respond, watching, return_exceptions=True))[0]
            ex.client_gone = isinstance(outcome, ConnectionError) or (client_left and outcome is not None)
            if isinstance(outcome, Exception) and not isinstance(outcome, ConnectionError):
                log.error("mock upstream failed on %s %s", method, path, exc_info=outcome)
            self._finish(ex, method, path)
        if ex.closed or ex.client_gone or client_left:
            return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    def _route(self, method: str, path: str, request: h11.Request, body: bytes) -> Reply | Stream:
        if method == "POST" and path in CHAT_PATHS:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
            completion_id = "chatcmpl-" + mock_text.random_id(secrets.SystemRandom(), 29)
            try:
                return plan_chat(body, headers, self.profile, self.seed, completion_id)
            except (TypeError, ValueError, AttributeError, KeyError) as e:  # a field of an unexpected shape
                log.warning("mock upstream cannot answer this request", exc_info=True)
                return error_reply(400, f"Invalid request: {e!r}", "invalid_request_error")
        if method == "GET" and path in ("/v1/models", "/models"):
            models = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "streamtap"} for m in MODELS
            ]
            return Reply(200, json.dumps({"object": "list", "data": models}).encode(), _JSON)
        if method == "GET" and path == "/health":
            return Reply(200, b'{"status":"ok"}', _JSON)
        message = f"Unknown request URL: {method} {path}. Please check the URL for typos."
        return error_reply(404, message, "invalid_request_error", "unknown_url")

    def _finish(self, ex: _Exchange, method: str, path: str) -> None:
        entry = ex.entry
        if entry is None:
            log.info("%s %s %s", method, path, ex.status or "-")
            return
        with self._changed:
            entry.finished_at = time.monotonic()
            entry.client_gone = ex.client_gone
            self._changed.notify_all()
        ttft = "-" if entry.ttft is None else f"{entry.ttft * 1000:.0f}ms"
        log.info(
            "%s %s %s model=%s status=%d stream=%s events=%d ttft=%s took=%.0fms fault=%s%s",
            method, path, entry.completion_id, entry.model, entry.status, entry.stream, len(entry.sends),
            ttft, (entry.finished_at - entry.request_received) * 1000, entry.fault,
            " client_gone" if entry.client_gone else "",
        )  # fmt: skip

    # -- writing ------------------------------------------------------------------------------------
    def _head(
        self, ex: _Exchange, status: int, headers: tuple[tuple[str, str], ...], received: float
    ) -> bytes:
        extra = [("server", "streamtap-mock"), ("x-request-id", "req_" + secrets.token_hex(16))]
        if ex.entry is not None:
            extra.append(("x-mock-completion-id", ex.entry.completion_id))
            extra.append(("openai-processing-ms", str(round((time.monotonic() - received) * 1000))))
        reason = http.HTTPStatus(status).phrase.encode()
        ex.status = status
        return ex.conn.send(h11.Response(status_code=status, headers=[*headers, *extra], reason=reason))

    async def _write(self, ex: _Exchange, data: bytes, index: int, token: bool) -> float:
        ex.writer.write(data)
        await ex.writer.drain()
        now = time.monotonic()
        if ex.entry is not None and index >= 0:
            ex.entry.sends.append((now, index, token))
            if token and ex.entry.first_token_at is None:
                ex.entry.first_token_at = now
        return now

    async def _send_reply(self, ex: _Exchange, reply: Reply, received: float) -> None:
        await sleep_until(received + reply.delay)
        if reply.abort:
            ex.writer.transport.abort()
            ex.closed = True
            return
        headers = (*reply.headers, ("content-length", str(len(reply.body))))
        data = self._head(ex, reply.status, headers, received) + ex.conn.send(h11.Data(data=reply.body))
        await self._write(ex, data + ex.conn.send(h11.EndOfMessage()), 0, reply.status == 200)
        if ex.entry is not None and reply.status == 200:
            choices = json.loads(reply.body)["choices"]
            ex.entry.content = {c["index"]: c["message"]["content"] or "" for c in choices}

    async def _send_stream(self, ex: _Exchange, stream: Stream, received: float) -> None:
        """Write the events on time; each one is flushed to the kernel before the next is due."""
        entry, pending = ex.entry, self._head(ex, 200, stream.headers, received)
        # one gzip member, flushed per event so that it still streams (Z_SYNC_FLUSH ends on a byte boundary)
        gzip = zlib.compressobj(wbits=31) if stream.gzip else None
        last = time.monotonic()
        for index, step in enumerate(stream.steps):
            if step.delay > 0:
                last = await sleep_until((received if step.from_request else last) + step.delay)
            elif not pending:
                await asyncio.sleep(0)  # zero-delay profiles must not starve the other connections
            payload = step.payload
            if gzip is not None:
                payload = gzip.compress(payload) + gzip.flush(zlib.Z_SYNC_FLUSH)
            last = await self._write(ex, pending + ex.conn.send(h11.Data(data=payload)), index, step.token)
            pending = b""
            if entry is not None and step.field is not None:
                texts = entry.content if step.field == "content" else entry.reasoning
                texts[step.choice] = texts.get(step.choice, "") + step.text
        if pending:
            await self._write(ex, pending, -1, False)
        if stream.abort:  # no terminating zero-length chunk: the client sees a truncated body
            ex.writer.transport.abort()
            ex.closed = True
            return
        tail = b"" if gzip is None else ex.conn.send(h11.Data(data=gzip.flush()))
        await self._write(ex, tail + ex.conn.send(h11.EndOfMessage()), -1, False)


def run(host: str, port: int, profile: str = "default", seed: int | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM (the `streamtap mock-upstream` command). Prints the URL once
    listening. Raises ConfigError if the profile is unknown or the address cannot be used."""
    asyncio.run(_run(MockUpstream(host, port, profile, seed)))


async def _run(upstream: MockUpstream) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await upstream.listen()
    print(f"mock upstream listening on {upstream.url} (profile {upstream.profile})", flush=True)
    serving = asyncio.create_task(upstream.serve(server))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (serving, stopping):
        task.cancel()
    await asyncio.gather(serving, stopping, return_exceptions=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
