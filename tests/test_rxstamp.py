"""`rxstamp`: an upstream read's time is when its bytes reached the socket, not when the loop read them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from streamtap import rxstamp

pytestmark = pytest.mark.skipif(rxstamp.SO_TIMESTAMPNS is None, reason="no SO_TIMESTAMPNS on this platform")


def test_stamping_socket_keeps_the_arrival_time() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            conn.setsockopt(socket.SOL_SOCKET, rxstamp.SO_TIMESTAMPNS, 1)  # type: ignore[arg-type]
            stamped = rxstamp.StampingSocket(conn)
            sent = time.monotonic()
            client.sendall(b"data: x\n\n")
            time.sleep(0.3)  # the bytes wait in the socket
            read_at = time.monotonic()
            assert stamped.recv(65536) == b"data: x\n\n"
            assert stamped.received is not None
            assert sent - 0.05 < stamped.received < read_at - 0.2
            assert stamped.arrival() == stamped.received
            stamped.received = None  # a read the kernel gave no stamp for: now instead
            assert stamped.arrival() >= read_at
            assert stamped.getsockname() == conn.getsockname()  # everything else is the socket's
            assert stamped.fileno() == conn.fileno()


@dataclass
class _IO:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class _Handler:
    """The shape `attach` looks for: mitmproxy's ConnectionHandler, whose coroutine runs the hook."""

    def __init__(self) -> None:
        self.transports: dict[Any, _IO] = {}

    async def open_connection(self, port: int, hook: Callable[[Any], Any]) -> tuple[_IO, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        server = object()
        self.transports[server] = _IO(reader, writer)
        return self.transports[server], hook(server)


async def _read_late(port: int, hook: Callable[[Any], Any]) -> tuple[bytes, float, float, Any]:
    io, stamps = await asyncio.create_task(_Handler().open_connection(port, hook))
    await asyncio.sleep(0.05)  # the peer has sent by now
    blocked_from = time.monotonic()
    time.sleep(0.3)  # the loop is busy: nothing is read meanwhile
    data = await io.reader.readexactly(9)
    io.writer.close()
    return data, blocked_from, time.monotonic(), stamps


def _run(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> tuple[bytes, float, float, Any]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.setblocking(False)

        async def main() -> tuple[bytes, float, float, Any]:
            attached = asyncio.Event()

            def hook(server: Any) -> Any:  # like mitmproxy's server_connected, before the request goes out
                stamps = rxstamp.attach(server)
                attached.set()
                return stamps

            task = asyncio.create_task(_read_late(port, hook))
            conn, _ = await asyncio.get_running_loop().sock_accept(server)
            with conn:
                await attached.wait()
                conn.sendall(b"data: x\n\n")
                return await task

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(main())


def test_attach_under_asyncio() -> None:
    data, blocked_from, read_at, stamps = _run(asyncio.new_event_loop)
    assert data == b"data: x\n\n"
    assert isinstance(stamps, rxstamp.StampingSocket)
    assert stamps.received is not None
    assert stamps.received < blocked_from < read_at - 0.25  # arrived before the loop was blocked


def test_attach_declines_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    data, *_, stamps = _run(uvloop.new_event_loop)
    assert data == b"data: x\n\n"
    assert stamps is None  # uvloop reads in C: the caller keeps its own readings


def test_attach_declines_what_it_does_not_know() -> None:
    assert rxstamp.attach(object()) is None  # no running task at all
