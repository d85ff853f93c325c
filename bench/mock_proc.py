"""The simulated provider in a process of its own, so it shares no GIL with the load client.

The parent talks to it over a `multiprocessing` pipe between measurement phases (never during one):
it asks for the send log of the completions it saw, clears it, and turns byte capture on or off.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from streamtap.mock_upstream import MockUpstream

# (request_received, first_token_at, [(send time, event index, carries tokens)])
Entry = tuple[float, float | None, list[tuple[float, int, bool]]]


class _CapturingUpstream(MockUpstream):
    """Also keeps the exact bytes written for each completion (head and chunk framing included), when
    asked: the pass-through check compares them with what a client behind a proxy received."""

    capture = False
    wire: dict[str, bytearray]

    async def _write(self, ex: Any, data: bytes, index: int, token: bool) -> float:
        if self.capture and ex.entry is not None:
            self.wire.setdefault(ex.entry.completion_id, bytearray()).extend(data)
        return await super()._write(ex, data, index, token)


def _serve(conn: Connection, cpus: set[int] | None, seed: int) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    upstream = _CapturingUpstream(profile="instant", seed=seed)
    upstream.wire = {}
    upstream.start()
    conn.send(upstream.url)
    while True:
        cmd, arg = conn.recv()
        if cmd == "entries":
            with upstream._changed:
                out: dict[str, Entry] = {}
                for cid in arg:
                    e = upstream.log.get(cid)
                    if e is not None:
                        out[cid] = (e.request_received, e.first_token_at, list(e.sends))
            conn.send(out)
        elif cmd == "clear":
            with upstream._changed:
                upstream.log.clear()
            upstream.wire.clear()
            conn.send(None)
        elif cmd == "capture":
            upstream.capture = bool(arg)
            conn.send(None)
        elif cmd == "wire":
            conn.send({cid: bytes(upstream.wire[cid]) for cid in arg if cid in upstream.wire})
        elif cmd == "stop":
            upstream.stop()
            conn.send(None)
            return


@dataclass
class MockProcess:
    """`MockUpstream(profile="instant")` (timing comes from `x-mock-*` headers) in a child process."""

    cpus: set[int] | None = None
    seed: int = 6
    url: str = ""

    def start(self) -> MockProcess:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.cpus, self.seed), daemon=True)
        self._proc.start()
        if not self._conn.poll(30):
            raise RuntimeError("the mock upstream process did not start")
        self.url = self._conn.recv()
        return self

    def _ask(self, cmd: str, arg: Any = None) -> Any:
        self._conn.send((cmd, arg))
        if not self._conn.poll(60):
            raise RuntimeError(f"the mock upstream process did not answer {cmd!r}")
        return self._conn.recv()

    def entries(self, cids: list[str]) -> dict[str, Entry]:
        return self._ask("entries", cids)  # type: ignore[no-any-return]

    def clear(self) -> None:
        self._ask("clear")

    def capture(self, on: bool) -> None:
        self._ask("capture", on)

    def wire(self, cids: list[str]) -> dict[str, bytes]:
        return self._ask("wire", cids)  # type: ignore[no-any-return]

    @property
    def pid(self) -> int:
        return int(self._proc.pid or 0)

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self._ask("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
