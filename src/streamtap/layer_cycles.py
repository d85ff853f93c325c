"""Free each of mitmproxy's finished HTTP exchanges when it finishes, not in the next full collection.

mitmproxy handles every request/response exchange in an `HttpStream` layer that sits in two reference
cycles of its own: its context's list of layers holds it, and its two state attributes are bound methods of
itself. The exchange's flow hangs off it (request, response, their headers and bodies, streamtap's tee), so
every exchange, ~25 objects, becomes cyclic garbage when it ends, and only a full collection of the oldest
generation, which pauses the event loop and every stream with it, can free it. At 50 concurrent streams that
is ~2,600 objects every 2.5 s, a quarter of what each full collection walks.

Once the HTTP layer has dropped a stream (`DropStream`: the exchange is over), nothing of mitmproxy's calls
on it again. `install()` makes each HTTP layer's table of streams note the streams it drops; after the event
that dropped one has been handled (the event loop's next turn), the stream's two cycles are cut, and
reference counting frees the exchange at once. A stream still waiting for a reply to one of its commands,
or upgraded to another protocol, is left to the collector as before. If mitmproxy's internals are not what
this module expects, nothing is installed: the collector frees the exchanges, as it always could.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

_installed = False


def _finished(event: Any) -> Any:
    """The state of a stream that is over: every event is ignored (what a dropped stream gets, if any)."""
    return
    yield  # a generator, as the states mitmproxy calls are


def release(stream: Any) -> bool:
    """Cut a dropped stream's own cycles, if nothing of it is pending; whether it did."""
    try:
        if stream._paused is not None or stream.child_layer is not None:
            return False  # waiting for a command's reply, or a websocket/TCP layer lives on in it
        layers = stream.context.layers
        if not layers or layers[-1] is not stream:
            return False  # not the list `Context.fork()` made for this stream alone
        stream.mode  # noqa: B018 - computed from the list of layers (and kept) before the list loses the stream
        stream.context.layers = layers[:-1]
        # Every event is ignored from now on, a late protocol error included (mitmproxy's own done stream
        # answers one with nothing but another DropStream).
        stream._handle_event = stream.client_state = stream.server_state = _finished
    except Exception:  # mitmproxy's internals not as expected: the collector frees the stream, as it can
        return False
    return True


def _release_all(dropped: list[Any]) -> None:
    try:
        for stream in dropped:
            release(stream)
    finally:
        dropped.clear()


class _Streams(dict[int, Any]):
    """An HTTP layer's streams, releasing the dropped ones once the event that dropped them is handled."""

    __slots__ = ("_dropped",)

    def __init__(self, streams: dict[int, Any]) -> None:
        super().__init__(streams)
        self._dropped: list[Any] = []

    def pop(self, key: int, *default: Any) -> Any:
        dropped = key in self
        stream = super().pop(key, *default)
        if dropped:
            if not self._dropped:
                try:
                    asyncio.get_running_loop().call_soon(_release_all, self._dropped)
                except RuntimeError:  # no event loop (mitmproxy's test helpers): the collector frees it
                    return stream
            self._dropped.append(stream)
        return stream


def install() -> bool:
    """Make mitmproxy's HTTP layers release their finished streams (once per process); whether it is on."""
    global _installed
    if _installed:
        return True
    try:
        from mitmproxy.proxy.layers.http import HttpLayer, HttpStream
    except ImportError:
        return False
    if not hasattr(HttpStream, "mode") or not hasattr(HttpStream, "child_layer"):
        log.info("streamtap: mitmproxy's HTTP streams are not as expected; the collector frees them")
        return False
    init = HttpLayer.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self.streams) is dict:
            self.streams = _Streams(self.streams)

    HttpLayer.__init__ = __init__  # type: ignore[method-assign]
    _installed = True
    return True
