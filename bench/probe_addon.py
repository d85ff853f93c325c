"""A diagnostic mitmproxy addon for the proxies under test (`--set scripts=bench/probe_addon.py`).

It measures, inside the proxy process, what stalls the event loop: how late a 5 ms timer fires (loop lag)
and how long each cyclic garbage collection takes. SIGUSR2 starts a window (clears what was collected);
SIGUSR1 writes the window's numbers as JSON to $BENCH_PROBE_OUT.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
from typing import Any

TICK = 0.005


class Probe:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._tick())
        gc.callbacks.append(self._gc)
        loop.add_signal_handler(signal.SIGUSR2, self.reset)
        loop.add_signal_handler(signal.SIGUSR1, self.dump)

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + TICK
            await asyncio.sleep(TICK)
            self.lags.append(time.monotonic() - due)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append((int(info["generation"]), time.perf_counter() - self._gc_start))

    def reset(self) -> None:
        self.lags.clear()
        self.gc_pauses.clear()

    def dump(self) -> None:
        path = os.environ.get("BENCH_PROBE_OUT")
        if path:
            with open(path, "w") as f:
                json.dump({"lags": self.lags, "gc": self.gc_pauses}, f)


addons = [Probe()]
