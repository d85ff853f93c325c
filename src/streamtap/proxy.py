"""Run mitmproxy (mitmdump's master) with the streamtap addon, the way `mitmdump -s` would."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from mitmproxy.tools import cmdline, dump, main

from .addon import StreamtapAddon

log = logging.getLogger("streamtap")


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
    """The event loop mitmproxy runs on: asyncio's, unless `STREAMTAP_EVENT_LOOP=uvloop` asks for uvloop.

    asyncio's loop reads sockets in Python, which lets `streamtap.rxstamp` take each upstream read's arrival
    time from the kernel: recorded gaps are then within 0.1 ms of the upstream's at p99, against 1.5 ms
    with the loop's own readings. uvloop (`pip install 'streamtap[uvloop]'`) reads in C: 4-10% less CPU
    per event, but chunks are stamped when the loop gets round to them. bench/README.md has the numbers.
    """
    if os.environ.get("STREAMTAP_EVENT_LOOP", "asyncio") != "uvloop":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        log.warning("streamtap: STREAMTAP_EVENT_LOOP=uvloop, but uvloop is not installed: asyncio's loop")
        return "asyncio"
    # mitmproxy's main.run() starts its loop with asyncio.run(), which asks the policy for the loop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_proxy(**kwargs: Any) -> int:
    """Blocks until SIGINT/SIGTERM; returns the exit status."""
    install_event_loop()
    main.run(_StreamtapMaster, cmdline.mitmdump, mitmdump_args(**kwargs))
    return 0
