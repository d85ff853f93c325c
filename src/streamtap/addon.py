"""The mitmproxy addon: wiring between mitmproxy's hooks and the worker process.

No parsing, no SQL and no metrics here. Hooks run on mitmproxy's event loop: each one takes a monotonic
clock reading (for the response, the kernel's arrival time of the read that carried it, see `rxstamp`) and
hands what it saw to the worker channel as one small message (`streamtap.pipeline`); the body's chunks go
as they were read. The worker process (`streamtap.worker`) decodes, interprets,
records and serves `/metrics`, so none of that shares this interpreter with the streams.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
import time
import uuid
from time import monotonic
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from . import layer_cycles, rxstamp
from .channel import WorkerChannel
from .durations import parse_duration
from .errors import StreamtapError
from .pipeline import BODY, CHUNK, END, HEADERS, MAX_PARSED_BODY, MAX_REQUEST_BODY, START, TAP_ERROR
from .privacy import api_key_fingerprint, redact_url
from .records import Outcome
from .rxstamp import StampingSocket

log = logging.getLogger("streamtap")

# Request paths whose exchanges are recorded even when they are not streamed.
LLM_PATHS = ("/chat/completions", "/completions", "/responses", "/messages", "/complete")
# The worker's CPU priority: "idle" (SCHED_IDLE) or a nice increment; STREAMTAP_WORKER_PRIORITY overrides.
WORKER_PRIORITY = "idle"
_OPTIONS = (
    "streamtap_db",
    "streamtap_metrics_port",
    "streamtap_metrics_host",
    "streamtap_instance",
    "streamtap_max_models",
    "streamtap_queue_size",
    "streamtap_capture",
    "streamtap_retention",
    "streamtap_keep_events",
)


class _Tee:
    """`flow.response.stream`: returns every chunk unchanged and passes it on, stamped, to the worker.

    mitmproxy calls it once per network read, then once with b"" at the end of the body. It must never
    return b"" for a non-empty chunk: that would end an HTTP/1 chunked response early.
    """

    __slots__ = ("key", "put")

    def __init__(self, key: str, put: Any) -> None:
        self.key = key
        self.put = put

    def __call__(self, chunk: bytes) -> bytes:
        self.put((CHUNK, self.key, monotonic(), chunk))
        return chunk


class _StampedTee(_Tee):
    """A `_Tee` on an upstream connection whose reads carry the kernel's arrival time (`rxstamp`): each chunk
    gets the time its bytes reached the socket, not the time the event loop got round to them. That reading
    is never later than monotonic() now, and when mitmproxy hands over a chunk no later read has happened
    on its connection yet, except where a hook ran in between (then it is that read's time: still earlier
    than now)."""

    __slots__ = ("stamps",)

    def __init__(self, key: str, put: Any, stamps: StampingSocket) -> None:
        super().__init__(key, put)
        self.stamps = stamps

    def __call__(self, chunk: bytes) -> bytes:
        self.put((CHUNK, self.key, self.stamps.arrival(), chunk))
        return chunk


class StreamtapAddon:
    """Records every LLM exchange passing through mitmproxy. Options are `streamtap_*`."""

    def __init__(self) -> None:
        self.channel: WorkerChannel | None = None
        self._keys: dict[str, str] = {}  # flow id -> stream id, while the exchange is open
        self._stamps: dict[str, StampingSocket] = {}  # server connection id -> its reads' arrival times
        self._put: Any = None
        self._running = False
        self.instance = ""

    # -- options ---------------------------------------------------------------------------------------
    def load(self, loader: Any) -> None:
        loader.add_option(
            "streamtap_db",
            str,
            "sqlite:///streamtap.db",
            "SQLAlchemy URL of the database streams are recorded to (sqlite:///file.db, postgresql+psycopg://...).",
        )
        loader.add_option(
            "streamtap_metrics_port",
            int,
            9464,
            "Port of the Prometheus /metrics endpoint; 0 turns it off.",
        )
        loader.add_option(
            "streamtap_metrics_host",
            str,
            "127.0.0.1",
            "Address the /metrics endpoint binds to.",
        )
        loader.add_option(
            "streamtap_instance",
            str,
            "",
            "Name of this proxy in the shared store (default: hostname:listen_port).",
        )
        loader.add_option(
            "streamtap_max_models",
            int,
            50,
            "Distinct values the metrics' model label takes before further models count as 'other'.",
        )
        loader.add_option(
            "streamtap_queue_size",
            int,
            10_000,
            "Finished streams the recorder holds before it drops the oldest (counted).",
        )
        loader.add_option(
            "streamtap_capture",
            str,
            "full",
            "full: record prompts, completions and event bytes; metadata: timings, models, usage and "
            "outcomes only, no prompt or completion text.",
            choices=("full", "metadata"),
        )
        loader.add_option(
            "streamtap_retention",
            str,
            "",
            "Delete recorded streams older than this (e.g. 7d), checked every few minutes; empty keeps all.",
        )
        loader.add_option(
            "streamtap_keep_events",
            bool,
            True,
            "Store one row per SSE event; off keeps per-stream timings only, for very high volume.",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "streamtap_db" in updated:
            from .db.engine import make_engine

            try:
                make_engine(opts.streamtap_db).dispose()  # validates the URL; does not connect
            except StreamtapError as e:
                raise exceptions.OptionsError(f"streamtap_db: {e}") from e
        if "streamtap_retention" in updated and opts.streamtap_retention:
            try:
                parse_duration(opts.streamtap_retention)
            except StreamtapError as e:
                raise exceptions.OptionsError(f"streamtap_retention: {e}") from e
        for name in ("streamtap_max_models", "streamtap_queue_size", "streamtap_metrics_port"):
            if name in updated and getattr(opts, name) < 0:
                raise exceptions.OptionsError(f"{name} must not be negative")
        if self._running and updated & set(_OPTIONS):
            # A new worker for the new settings; exchanges open meanwhile are recorded as interrupted.
            self._stop_worker()
            self._start_worker()

    def running(self) -> None:
        """The proxy is up and every option is set: start the worker (database, metrics endpoint)."""
        self._running = True
        self._start_worker()
        # Each finished exchange freed by reference counting when it ends (see `layer_cycles`), instead of
        # as cyclic garbage that only a full collection frees.
        released = layer_cycles.install()
        # What is loaded by now (mitmproxy and its dependencies) lives as long as the process. Out of the
        # cyclic collector's reach, a full collection no longer walks it all: that walk stalled the event
        # loop, and every stream with it, for tens of milliseconds each time.
        gc.freeze()
        if not released:
            # The exchanges are the collector's to free: a full collection after every second collection of
            # the middle generation (instead of every tenth, and then only once enough survived) frees a
            # second's worth of them in ~1 ms instead of half a minute's in 8-12 ms, a stall every stream
            # felt. With them released, the default's rare full collections find little garbage (~1.5-2 ms
            # every ~18 s at 50 streams: the live connections' objects), not a stall every 2.5 s.
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, 1)
        # The sender thread runs Python between its writes; by default the event loop waits up to 5 ms
        # for the GIL whenever data arrives meanwhile. 0.5 ms bounds that wait.
        sys.setswitchinterval(0.0005)
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        if loop == "asyncio" and rxstamp.SO_TIMESTAMPNS is not None:
            log.info("streamtap: event loop asyncio; chunks are timed by the kernel's receive timestamps")
        else:
            log.info("streamtap: event loop %s; chunks are timed when the loop reads them", loop)

    def worker_config(self) -> dict[str, Any]:
        """What the worker needs to know (see `streamtap.worker.Worker`)."""
        opts = ctx.options
        listen_port = getattr(opts, "listen_port", None) or 8080
        self.instance = opts.streamtap_instance or f"{socket.gethostname()}:{listen_port}"
        return {
            "db": opts.streamtap_db,
            "instance": self.instance,
            "metrics_host": opts.streamtap_metrics_host,
            "metrics_port": opts.streamtap_metrics_port,
            "max_models": opts.streamtap_max_models,
            "queue_size": opts.streamtap_queue_size,
            "keep_events": opts.streamtap_keep_events,
            "capture": opts.streamtap_capture,
            "retention": opts.streamtap_retention,
            "priority": os.environ.get("STREAMTAP_WORKER_PRIORITY", WORKER_PRIORITY),
        }

    def _start_worker(self) -> None:
        config = self.worker_config()
        channel = WorkerChannel(config)
        try:
            channel.start()
        except StreamtapError as e:
            # logged as an error during start-up, mitmproxy's errorcheck exits with status 1
            log.error(f"streamtap: {e}")
            return
        self.channel = channel
        self._put = channel.put
        log.info("streamtap: recording to %s as %s", _safe_url(config["db"]), self.instance)

    def _stop_worker(self) -> None:
        channel, self.channel, self._put = self.channel, None, None
        if channel is not None:
            channel.close()

    # -- connection hooks ------------------------------------------------------------------------------
    def server_connected(self, data: ServerConnectionHookData) -> None:
        if self._put is None:
            return
        stamps = rxstamp.attach(data.server)
        if stamps is not None:
            self._stamps[data.server.id] = stamps

    def server_disconnected(self, data: ServerConnectionHookData) -> None:
        self._stamps.pop(data.server.id, None)

    # -- flow hooks ------------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if self._put is None or req.method != "POST":
            return
        if not req.path.split("?", 1)[0].rstrip("/").endswith(LLM_PATHS):
            return
        try:
            self._open(flow, monotonic())
        except Exception:
            self._tap_error("while reading the request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        assert resp is not None
        stamps = self._stamps.get(flow.server_conn.id)
        now = monotonic() if stamps is None else stamps.arrival()
        content_type = resp.headers.get("content-type", "")
        is_sse = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        key = self._keys.get(flow.id)
        put = self._put
        if put is not None:
            try:
                if key is None and is_sse:
                    # an event stream on a path we did not expect: t0 from the request's wall-clock end
                    ended = flow.request.timestamp_end or time.time()
                    key = self._open(flow, monotonic() - max(0.0, time.time() - ended))
                if key is not None:
                    encoding = resp.headers.get("content-encoding") or None
                    put((HEADERS, key, now, resp.status_code, content_type, encoding))
            except Exception:
                self._tap_error("while reading the response headers")
        if is_sse:
            if key is None or put is None:
                resp.stream = True
            else:
                resp.stream = _Tee(key, put) if stamps is None else _StampedTee(key, put, stamps)

    def response(self, flow: http.HTTPFlow) -> None:
        key = self._keys.pop(flow.id, None)
        put = self._put
        if key is None or put is None:
            return
        now = monotonic()
        try:
            resp = flow.response
            assert resp is not None
            if not isinstance(resp.stream, _Tee):
                put((BODY, key, now, resp.get_content(strict=False) or b""))
            put((END, key, now, None, None))
        except Exception:
            self._tap_error("while finishing the record")

    def error(self, flow: http.HTTPFlow) -> None:
        key = self._keys.pop(flow.id, None)
        if key is None or self._put is None:
            return
        message = flow.error.msg if flow.error else "connection error"
        kind = Outcome.CLIENT_DISCONNECT if "client" in message.lower() else Outcome.UPSTREAM_DISCONNECT
        self._put((END, key, monotonic(), kind.value, message))

    def done(self) -> None:
        """Shutdown (SIGINT/SIGTERM): everything queued is written before the process exits."""
        put = self._put
        if put is not None:
            now = monotonic()
            for key in self._keys.values():
                put((END, key, now, Outcome.CLIENT_DISCONNECT.value, "proxy shut down"))
        self._keys.clear()
        self._stop_worker()

    # -- internals -------------------------------------------------------------------------------------
    def _open(self, flow: http.HTTPFlow, t0: float) -> str:
        req = flow.request
        body = req.get_content(strict=False) or b""
        key = uuid.uuid4().hex
        self._put(
            (
                START,
                key,
                t0,
                time.time(),
                req.method,
                redact_url(req.url),
                req.host,
                req.path.split("?", 1)[0],
                api_key_fingerprint(req.headers, req.query),
                # whole, for the worker to find the model in; beyond that only the part it stores
                (body if len(body) <= MAX_PARSED_BODY else body[:MAX_REQUEST_BODY]) or None,
            )
        )
        self._keys[flow.id] = key
        return key

    def _tap_error(self, where: str) -> None:
        """A failure on the proxy's side: logged here, counted by the worker; the client's bytes flow on."""
        log.exception("streamtap: tap error %s (the client's stream is unaffected)", where)
        if self._put is not None:
            self._put((TAP_ERROR, where))


def _safe_url(url: str) -> str:
    """A database URL for logs, without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
