"""`streamtap replay`: serve recorded exchanges as an LLM API, with the recorded bytes on the recorded clock.

A request to `POST /v1/chat/completions` (or `/v1/responses`, `/v1/messages`) is answered with a recording of
the same API: the status at the recorded time to first byte, then every event at its recorded time (the first
at its `t_ms` after the request was read, each next one at its recorded offset from the first, so TTFT and
gaps replay), scaled by 1/speed. Recorded faults replay too: an `upstream_disconnect` cuts the TCP connection
where the recording ends; a `client_disconnect` leaves the connection open after the recorded bytes, as the
upstream was when the client left. HTTP/1.1 on asyncio + h11, like the simulated provider.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h11
import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import read
from .db.models import Stream
from .errors import ConfigError, NotFoundError
from .h11server import H11Server, read_request, sleep_until, watch, write
from .records import Outcome, StreamRecord
from .replay_select import Chooser, json_object, parse_selection, resolve_ids

log = logging.getLogger("streamtap.replay")

REPLAY_ID_HEADER = "x-streamtap-replay-id"
REPLAY_OF_HEADER = "x-streamtap-replay-of"
LLM_PATHS = ("/chat/completions", "/completions", "/responses", "/messages", "/complete")


# -- what to send, and when -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    """A response to write: the head at `head_at`, then each write at its offset, then the end.

    Offsets are seconds after the request was read, already divided by the speed (0 = as fast as possible).
    `end` is "clean" (the body's end), "abort" (a TCP cut) or "hold" (stay open until the client leaves).
    """

    record_id: str
    status: int | None  # None: the recording has no response at all (cut before the headers)
    content_type: str
    head_at: float
    writes: tuple[tuple[float, bytes], ...]
    end: str
    length: int | None = None  # Content-Length for a whole (non-streamed) body


def not_replayable(rec: StreamRecord, event_count: int) -> str | None:
    """Why a recording cannot be replayed: it was stored without its bytes, or it has no end yet."""
    if rec.outcome is Outcome.IN_PROGRESS:
        return "it is still in progress"
    if rec.outcome is Outcome.INTERRUPTED:
        return "the proxy stopped while recording it (interrupted)"
    if rec.stream:
        if event_count and not rec.events:
            return "its events were not kept (--no-keep-events)"
        if rec.events and not any(e.raw for e in rec.events):
            return "it was recorded with --capture metadata (no bytes)"
    elif rec.response_body is None and rec.status_code is not None and rec.request_body is None:
        return "it was recorded with --capture metadata (no body)"
    return None


def plan_replay(rec: StreamRecord, speed: float) -> Plan:
    """When and what to send for one recording (pure)."""

    def at(ms: float | None) -> float:
        return 0.0 if not ms or speed == 0 else max(0.0, ms) / 1000.0 / speed

    ending = {Outcome.UPSTREAM_DISCONNECT: "abort", Outcome.CLIENT_DISCONNECT: "hold"}
    end = ending.get(rec.outcome, "clean")
    if rec.status_code is None:
        return Plan(rec.id, None, "", at(rec.duration_ms), (), "abort" if end == "clean" else end)
    head_at = at(rec.ttfb_ms)
    if not rec.stream:
        body = (rec.response_body or "").encode("utf-8")
        whole: tuple[tuple[float, bytes], ...] = ((max(head_at, at(rec.duration_ms)), body),) if body else ()
        return Plan(rec.id, rec.status_code, "application/json", head_at, whole, end, len(body))
    # Events that arrived in one network read leave in one write.
    writes = tuple(
        (at(t_ms), b"".join(e.raw for e in group))
        for t_ms, group in itertools.groupby(rec.events, key=lambda e: e.t_ms)
    )
    return Plan(rec.id, rec.status_code, "text/event-stream", head_at, writes, end)


def error_body(status: int, message: str, code: str) -> bytes:
    """OpenAI's error shape; the top-level `type` also makes it Anthropic's."""
    kind = {404: "not_found_error", 400: "invalid_request_error"}.get(status, "api_error")
    return json.dumps(
        {"type": "error", "error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()


# -- the server -----------------------------------------------------------------------------------------
class ReplayServer(H11Server):
    """Answers LLM API requests with recordings chosen by a `Chooser`, on the recorded schedule."""

    def __init__(
        self, chooser: Chooser, *, speed: float = 1.0, host: str = "127.0.0.1", port: int = 8090
    ) -> None:
        super().__init__(host, port)
        self.chooser, self.speed = chooser, speed

    async def _one_exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it. False when the connection must close."""
        try:
            got = await read_request(conn, reader, writer)
        except h11.RemoteProtocolError as e:
            await self._send_error(conn, writer, 400, f"bad request: {e}", "bad_request")
            return False
        if got is None:
            return False
        received = time.monotonic()
        request, body = got
        respond = asyncio.create_task(self._respond(conn, writer, request, body, received))
        watching = asyncio.create_task(watch(conn, reader))
        try:
            await asyncio.wait({respond, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_left = watching.done()
            for t in (respond, watching):
                t.cancel()
            result = (await asyncio.gather(respond, watching, return_exceptions=True))[0]
        if isinstance(result, Exception) and not isinstance(result, ConnectionError | asyncio.CancelledError):
            log.error("replay failed", exc_info=result)
            return False
        keep = result is True and not client_left
        return keep and conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes, t0: float
    ) -> bool:
        method = request.method.decode()
        path = request.target.decode("latin-1").partition("?")[0]
        if method == "GET" and path.rstrip("/") == "/health":
            return await self._send(conn, writer, 200, b'{"status":"ok"}', ())
        if method != "POST" or not path.rstrip("/").endswith(LLM_PATHS):
            served = "POST /v1/chat/completions, /v1/responses and /v1/messages"
            message = f"streamtap replay serves {served}, not {method} {path}"
            return await self._send_error(conn, writer, 404, message, "unknown_url")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        replay_id = headers.get(REPLAY_ID_HEADER, "").strip() or None
        try:
            rec, event_count = await asyncio.to_thread(self._choose, path, json_object(body), replay_id)
        except NotFoundError as e:
            return await self._send_error(conn, writer, 404, str(e), "no_recording")
        tag = ((REPLAY_OF_HEADER, rec.id),)
        reason = not_replayable(rec, event_count)
        if reason is not None:
            message = f"recording {rec.id} cannot be replayed: {reason}"
            return await self._send_error(conn, writer, 404, message, "no_bytes", tag)
        log.info("%s %s -> %s (%s)", method, path, rec.id, rec.outcome.value)
        return await self._play(conn, writer, plan_replay(rec, self.speed), t0)

    def _choose(self, path: str, body: dict[str, Any], replay_id: str | None) -> tuple[StreamRecord, int]:
        rec = self.chooser.choose(path, body, replay_id)
        with Session(self.chooser.engine) as session:
            count = session.scalar(sa.select(Stream.event_count).where(Stream.id == rec.id)) or 0
        return rec, count

    async def _play(self, conn: h11.Connection, writer: asyncio.StreamWriter, plan: Plan, t0: float) -> bool:
        if plan.status is None:
            await sleep_until(t0 + plan.head_at)
            if plan.end == "hold":
                await asyncio.get_running_loop().create_future()  # until the client leaves
            writer.transport.abort()
            return False
        headers = [("content-type", plan.content_type), (REPLAY_OF_HEADER, plan.record_id)]
        if plan.length is not None:
            headers.append(("content-length", str(plan.length)))
        await sleep_until(t0 + plan.head_at)
        await write(writer, conn.send(_response(plan.status, headers)))
        base: float | None = None  # when the first write actually left: later ones keep their offsets from it
        first = plan.writes[0][0] if plan.writes else 0.0
        for offset, data in plan.writes:
            due = t0 + offset if base is None else base + (offset - first)
            await sleep_until(due)
            sent = await write(writer, conn.send(h11.Data(data=data)))
            base = sent if base is None else base
        if plan.end == "abort":  # no chunked terminator: the client sees the cut the recording saw
            writer.transport.abort()
            return False
        if plan.end == "hold":
            await asyncio.get_running_loop().create_future()  # until the client leaves
        await write(writer, conn.send(h11.EndOfMessage()))
        return True

    async def _send_error(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        code: str,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        return await self._send(conn, writer, status, error_body(status, message, code), extra)

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: tuple[tuple[str, str], ...],
    ) -> bool:
        headers = [("content-type", "application/json"), ("content-length", str(len(body))), *extra]
        data = conn.send(_response(status, headers)) + conn.send(h11.Data(data=body))
        await write(writer, data + conn.send(h11.EndOfMessage()))
        return True


def _response(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    try:
        reason = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    return h11.Response(status_code=status, headers=[*headers, ("server", "streamtap-replay")], reason=reason)


# -- the command ----------------------------------------------------------------------------------------
def run(db: str, host: str, port: int, speed: float, specs: Sequence[str]) -> None:
    """Serve until Ctrl-C or SIGTERM (`streamtap replay`). Bad specs, unknown ids and a busy port are
    ConfigError / NotFoundError before anything listens."""
    from .db.engine import check_schema, make_engine

    if speed < 0:
        raise ConfigError("--speed must not be negative (0: as fast as possible)")
    selection = parse_selection(specs)
    engine = make_engine(db)
    try:
        check_schema(engine)
        with Session(engine) as session:
            selection = resolve_ids(session, selection)
            count = session.scalar(sa.select(sa.func.count()).select_from(Stream)) or 0
            read.get_streams(session, last=1)  # the first query's set-up cost is not paid by a request
        server = ReplayServer(Chooser(engine, selection), speed=speed, host=host, port=port)
        asyncio.run(_run(server, count))
    finally:
        engine.dispose()


async def _run(server: ReplayServer, count: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listening = await server.listen()
    speed = "as fast as possible" if server.speed == 0 else f"speed {server.speed:g}"
    print(
        f"streamtap: replaying {count} recorded exchanges on http://{server.host}:{server.port} ({speed})",
        flush=True,
    )
    serving = asyncio.create_task(server.serve(listening))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (serving, stopping):
        task.cancel()
    await asyncio.gather(serving, stopping, return_exceptions=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
