"""The small HTTP/1.1 server (asyncio + h11) under both of streamtap's own upstreams: the simulated provider
(`mock_upstream`) and `streamtap replay`. Each says what to answer; this module accepts connections, reads
requests, and writes with `drain()` meaning "in the kernel", so a recorded send time is when the bytes left.
Over TLS (for tests of HTTPS) that holds only for the TLS layer's buffer: asyncio keeps the socket's own
write buffer below it, so a send time may come early while a client reads slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time

import h11

from .errors import ConfigError

log = logging.getLogger("streamtap.h11server")

MAX_BODY = 64 * 1024 * 1024


class H11Server:
    """Accepts connections on `host:port` and runs `_one_exchange` on each until it returns False.

    `listen()` binds (`port` 0 picks one, and `port` then says which); `serve()` serves until cancelled,
    then drops the connections still open. With `tls`, connections are HTTPS.
    """

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self._handlers: set[asyncio.Task[None]] = set()

    async def listen(self) -> asyncio.Server:
        """Raises ConfigError when it cannot listen (the port is taken, the address is not ours)."""
        try:
            server = await asyncio.start_server(
                self._on_connection,
                self.host,
                self.port,
                ssl=self.tls,
                # a client that never answers the TLS close keeps its handler this long (default 30 s)
                ssl_shutdown_timeout=5.0 if self.tls else None,
            )
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from e
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def serve(self, server: asyncio.Server) -> None:
        """Serve until cancelled, then drop open connections."""
        try:
            # not server.serve_forever(): once cancelled it waits for open connections (keep-alive ones
            # too) to close before returning, and they only close below
            await asyncio.get_running_loop().create_future()
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    async def _one_exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it. False when the connection must close."""
        raise NotImplementedError

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # drain() then waits until every byte is in the kernel, so a send time means "on the wire" (over TLS:
        # out of the TLS layer, see above). asyncio's TLS transport pauses at a buffer size >= high (the plain
        # one at > high): 0 would pause it with nothing buffered, never to resume
        writer.transport.set_write_buffer_limits(high=1 if self.tls else 0)
        conn = h11.Connection(h11.SERVER)
        clean = False
        try:
            while await self._one_exchange(conn, reader, writer):
                conn.start_next_cycle()
            clean = True
        except (OSError, h11.ProtocolError) as e:  # OSError: a reset; over TLS a bad record (ssl.SSLError)
            log.debug("connection ended: %r", e)
        except asyncio.CancelledError:
            # the server is stopping. Ending normally instead of cancelled: asyncio before 3.12.2 calls
            # task.exception() on this task when it ends, which raises (and logs) for a cancelled task
            pass
        finally:
            self._handlers.discard(task)
            if clean:
                writer.close()
            else:
                writer.transport.abort()
            with contextlib.suppress(OSError):  # over TLS also a failed or timed-out shutdown
                await writer.wait_closed()


async def read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[h11.Request, bytes] | None:
    """The next request and its whole body; None when the client closed the connection instead. Raises
    h11.RemoteProtocolError for a malformed request or a body over `MAX_BODY` (its status hint: 413)."""
    request, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:  # curl sends larger bodies only once told to
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        else:  # ConnectionClosed: the client is done with this connection
            return None


async def watch(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    """Return when the client hangs up; keeps what it sends meanwhile (a pipelined request)."""
    while data := await reader.read(65536):
        conn.receive_data(data)


async def write(writer: asyncio.StreamWriter, data: bytes) -> float:
    """Write and wait until the bytes are in the kernel; returns that time (monotonic)."""
    writer.write(data)
    await writer.drain()
    return time.monotonic()


async def sleep_until(deadline: float) -> float:
    """Sleep until the monotonic clock reaches `deadline`; returns the time it woke."""
    while (now := time.monotonic()) < deadline:
        await asyncio.sleep(deadline - now)
    return now
