"""Run mitmproxy (mitmdump's master) with the streamtap addon, the way `mitmdump -s` would."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mitmproxy.tools import cmdline, dump, main

from .addon import StreamtapAddon


class _StreamtapMaster(dump.DumpMaster):
    def __init__(self, options: Any, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.addons.add(StreamtapAddon())


def mitmdump_args(
    *,
    mode: str,
    upstream: str | None,
    listen_host: str,
    listen_port: int,
    options: dict[str, Any],
    quiet: bool = False,
    extra: list[str] | None = None,
) -> list[str]:
    args = [
        "--mode",
        f"reverse:{upstream}" if mode == "reverse" else "regular",
        "--listen-host",
        listen_host,
        "--listen-port",
        str(listen_port),
        # the body a client receives is the body the upstream sent, compressed or not
        "--set",
        "anticomp=false",
    ]
    if quiet:
        args.append("--quiet")
    for name, value in options.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["--set", f"{name}={value}"]
    for item in extra or ():
        args += ["--set", item]
    return args


def install_event_loop() -> str:
    """uvloop under mitmproxy where it is installed (the default on Linux and macOS), else asyncio's loop.

    mitmproxy's own work per event stays the same; what changes is the loop around it: socket reads and
    writes, callbacks and timers run in C. bench/README.md has the numbers (CPU per event, latency).
    `STREAMTAP_EVENT_LOOP=asyncio` keeps asyncio's loop.
    """
    if os.environ.get("STREAMTAP_EVENT_LOOP", "uvloop") == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    # mitmproxy's main.run() starts its loop with asyncio.run(), which asks the policy for the loop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_proxy(**kwargs: Any) -> int:
    """Blocks until SIGINT/SIGTERM; returns the exit status."""
    install_event_loop()
    main.run(_StreamtapMaster, cmdline.mitmdump, mitmdump_args(**kwargs))
    return 0
