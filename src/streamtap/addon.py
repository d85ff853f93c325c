"""The mitmproxy addon: wiring between mitmproxy's hooks, the tap, the recorder and the metrics.

No parsing and no SQL here. Hooks run on mitmproxy's event loop: they only take a monotonic clock reading,
feed the tap and enqueue; the database is written on the recorder's thread.
"""

from __future__ import annotations

import gc
import json
import logging
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from mitmproxy import ctx, exceptions, http
from prometheus_client import CollectorRegistry

from .durations import parse_duration
from .errors import StreamtapError
from .metrics import Metrics, build_metrics, serve
from .privacy import api_key_fingerprint, redact_url, strip_content, strip_start
from .records import Outcome, StreamRecord, StreamStart
from .tap import StreamTap

log = logging.getLogger("streamtap")

# Request paths whose exchanges are recorded even when they are not streamed.
LLM_PATHS = ("/chat/completions", "/completions", "/responses", "/messages", "/complete")
MAX_REQUEST_BODY = 1 << 20


def _request_model(body: bytes) -> str | None:
    """The `model` of a JSON request body, if it has one."""
    if not body or len(body) > 8 * MAX_REQUEST_BODY:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = obj.get("model") if isinstance(obj, dict) else None
    return model if isinstance(model, str) else None


class _Tee:
    """`flow.response.stream`: returns every chunk unchanged, feeding a copy to the tap.

    mitmproxy calls it once per network read, then once with b"" at the end of the body. It must never
    return b"" for a non-empty chunk: that would end an HTTP/1 chunked response early.
    """

    __slots__ = ("addon", "broken", "tap")

    def __init__(self, addon: StreamtapAddon, tap: StreamTap) -> None:
        self.addon = addon
        self.tap = tap
        self.broken = False

    def __call__(self, chunk: bytes) -> bytes:
        if not self.broken:
            now = time.monotonic()
            try:
                if chunk:
                    self.tap.feed(chunk, now)
                else:
                    self.tap.end_of_body(now)
            except Exception:
                self.broken = True
                self.addon.tap_failed(self.tap, "while reading the stream")
        return chunk


class StreamtapAddon:
    """Records every LLM exchange passing through mitmproxy. Options are `streamtap_*`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics: Metrics | None = None
        self.recorder: Any = None
        self._metrics_server: Any = None
        self._taps: dict[str, StreamTap] = {}
        self._running = False
        self._retention: Any = None
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
        if not self._running:
            return  # everything starts in running(), once all options are set
        if updated & {"streamtap_metrics_port", "streamtap_metrics_host"}:
            self._start_metrics_server()
        if updated & {"streamtap_db", "streamtap_queue_size", "streamtap_keep_events", "streamtap_instance"}:
            self._start_recorder()

    def running(self) -> None:
        """The proxy is up and every option is set: open the database and the metrics endpoint."""
        opts = ctx.options
        self._running = True
        self.metrics = build_metrics(self.registry, max_models=opts.streamtap_max_models)
        try:
            self._start_metrics_server()
            self._start_recorder()
        except exceptions.OptionsError as e:
            # logged as an error during start-up, mitmproxy's errorcheck exits with status 1
            log.error(str(e))
        # What is loaded by now (mitmproxy, SQLAlchemy, Alembic, Prometheus: ~140,000 objects) lives as long
        # as the process. Out of the cyclic collector's reach, a full collection no longer walks it all:
        # that walk stalled the event loop, and every stream with it, for ~100 ms each time.
        gc.freeze()
        # The recorder thread runs Python between its database calls; by default the event loop waits up
        # to 5 ms for the GIL whenever data arrives meanwhile. 0.5 ms bounds that wait.
        sys.setswitchinterval(0.0005)

    def _start_metrics_server(self) -> None:
        opts = ctx.options
        self._stop_metrics_server()
        if opts.streamtap_metrics_port:
            try:
                self._metrics_server = serve(
                    self.registry, host=opts.streamtap_metrics_host, port=opts.streamtap_metrics_port
                )
            except StreamtapError as e:
                raise exceptions.OptionsError(f"streamtap: {e}") from e

    def _start_recorder(self) -> None:
        from .db.engine import make_engine, upgrade
        from .recorder import Recorder, mark_interrupted

        logging.getLogger("alembic").setLevel(logging.WARNING)  # mitmproxy sets the root logger to DEBUG
        opts = ctx.options
        url, queue_size, keep_events = (
            opts.streamtap_db,
            opts.streamtap_queue_size,
            opts.streamtap_keep_events,
        )
        listen_port = getattr(opts, "listen_port", None) or 8080
        self.instance = opts.streamtap_instance or f"{socket.gethostname()}:{listen_port}"
        try:
            engine = make_engine(url)
            upgrade(engine)
            mark_interrupted(engine, self.instance)
        except StreamtapError as e:
            raise exceptions.OptionsError(f"streamtap_db: {e}") from e
        if self.recorder is not None:
            self.recorder.close()
        if self._retention is not None:
            self._retention.stop()
            self._retention = None
        if opts.streamtap_retention:
            from .maintenance import RetentionThread

            self._retention = RetentionThread(engine, parse_duration(opts.streamtap_retention))
            self._retention.start()
        metrics = self.metrics
        assert metrics is not None
        self.recorder = Recorder(
            engine,
            queue_size=queue_size,
            keep_events=keep_events,
            on_written=metrics.recorder_written,
            on_dropped=metrics.recorder_dropped,
        )
        metrics.bind_recorder(lambda: self.recorder.depth if self.recorder is not None else 0)
        self.recorder.start()
        log.info("streamtap: recording to %s as %s", _safe_url(url), self.instance)

    # -- flow hooks ------------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if req.method != "POST" or not req.path.split("?", 1)[0].rstrip("/").endswith(LLM_PATHS):
            return
        try:
            self._open(flow, time.monotonic())
        except Exception:
            self._count_tap_error("while reading the request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        assert resp is not None
        now = time.monotonic()
        content_type = resp.headers.get("content-type", "")
        is_sse = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        tap = self._taps.get(flow.id)
        try:
            if tap is None and is_sse:
                # an event stream on a path we did not expect: t0 from the request's wall-clock end
                ended = flow.request.timestamp_end or time.time()
                tap = self._open(flow, now - max(0.0, time.time() - ended))
            if tap is None:
                return
            tap.response_headers(
                now, resp.status_code, content_type, resp.headers.get("content-encoding") or None
            )
        except Exception:
            if tap is not None:
                self.tap_failed(tap, "while reading the response headers")
            else:
                self._count_tap_error("while reading the response headers")
        if is_sse:
            resp.stream = _Tee(self, tap) if tap is not None else True

    def response(self, flow: http.HTTPFlow) -> None:
        tap = self._taps.pop(flow.id, None)
        if tap is None:
            return
        now = time.monotonic()
        try:
            resp = flow.response
            assert resp is not None
            if not tap.is_sse:
                tap.whole_body(resp.get_content(strict=False) or b"", now)
            self._finish(tap, tap.finish(now))
        except Exception:
            self._count_tap_error("while finishing the record")

    def error(self, flow: http.HTTPFlow) -> None:
        tap = self._taps.pop(flow.id, None)
        if tap is None:
            return
        message = flow.error.msg if flow.error else "connection error"
        kind = Outcome.CLIENT_DISCONNECT if "client" in message.lower() else Outcome.UPSTREAM_DISCONNECT
        try:
            self._finish(tap, tap.finish(time.monotonic(), disconnect=kind, reason=message))
        except Exception:
            self._count_tap_error("while finishing the record")

    def done(self) -> None:
        """Shutdown (SIGINT/SIGTERM): everything queued is written before the process exits."""
        for flow_id, tap in list(self._taps.items()):
            self._taps.pop(flow_id, None)
            try:
                self._finish(
                    tap,
                    tap.finish(
                        time.monotonic(), disconnect=Outcome.CLIENT_DISCONNECT, reason="proxy shut down"
                    ),
                )
            except Exception:
                self._count_tap_error("at shutdown")
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self._retention is not None:
            self._retention.stop()
            self._retention = None
        self._stop_metrics_server()

    # -- internals -------------------------------------------------------------------------------------
    def _open(self, flow: http.HTTPFlow, t0: float) -> StreamTap:
        req = flow.request
        body = req.get_content(strict=False) or b""
        model = _request_model(body)
        start = StreamStart(
            id=uuid.uuid4().hex,
            started_at=datetime.now(UTC),
            method=req.method,
            url=redact_url(req.url),
            host=req.host,
            path=req.path.split("?", 1)[0],
            request_model=model,
            api_key_fp=api_key_fingerprint(req.headers, req.query),
            proxy_instance=self.instance,
            request_body=body[:MAX_REQUEST_BODY].decode("utf-8", "replace") if body else None,
        )
        tap = StreamTap(start, t0)
        self._taps[flow.id] = tap
        if self.metrics is not None:
            self.metrics.stream_started(model, req.host)
        if self.recorder is not None:
            self.recorder.submit_start(strip_start(start) if self._metadata_only else start)
        return tap

    def _finish(self, tap: StreamTap, record: StreamRecord) -> None:
        if self.metrics is not None:
            self.metrics.stream_finished(record)
            for _ in range(record.tap_errors):
                self.metrics.tap_error()
        if self.recorder is not None:
            self.recorder.submit(strip_content(record) if self._metadata_only else record)

    def tap_failed(self, tap: StreamTap, where: str) -> None:
        """A bug in the tap: logged now, counted with the record; the client's bytes keep flowing."""
        tap.tap_errors += 1
        log.exception("streamtap: tap error %s (the client's stream is unaffected)", where)

    def _count_tap_error(self, where: str) -> None:
        log.exception("streamtap: tap error %s (the client's stream is unaffected)", where)
        if self.metrics is not None:
            self.metrics.tap_error()

    @property
    def _metadata_only(self) -> bool:
        return bool(ctx.options.streamtap_capture == "metadata")

    def _stop_metrics_server(self) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.close()


def _safe_url(url: str) -> str:
    """A database URL for logs, without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
