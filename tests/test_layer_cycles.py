"""`streamtap.layer_cycles`: mitmproxy's finished HTTP streams freed by reference counting.

Each test holds only a weak reference to the stream and keeps the cyclic collector off while it runs, so a
stream that is still in a reference cycle stays alive and fails the test.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mitmproxy import options
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import (
    ErrorCode,
    HttpLayer,
    HTTPMode,
    HttpStream,
    RequestProtocolError,
    ResponseData,
    ResponseProtocolError,
)
from mitmproxy.test import tflow

from harness import ProxyProcess
from streamtap import layer_cycles
from streamtap.mock_upstream import MockUpstream


@pytest.fixture(autouse=True)
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`install()` for one test: mitmproxy's `HttpLayer.__init__` is put back afterwards."""
    monkeypatch.setattr(HttpLayer, "__init__", HttpLayer.__init__)
    monkeypatch.setattr(layer_cycles, "_installed", False)
    assert layer_cycles.install()


def http_layer() -> HttpLayer:
    return HttpLayer(Context(tflow.tclient_conn(), options.Options()), HTTPMode.regular)


def add_stream(layer: HttpLayer, stream_id: int = 1) -> weakref.ref[HttpStream]:
    """A stream as `HttpLayer.make_stream` makes it, with a flow hanging off it; a weak reference to it."""
    flow = tflow.tflow(resp=True)
    # mitmproxy's debug-mode type checks leave caught TypeErrors in cycles with this frame: collected now,
    # before the frame holds the stream.
    gc.collect()
    stream = HttpStream(layer.context.fork(), stream_id)
    stream.flow = flow
    layer.streams[stream_id] = stream
    return weakref.ref(stream)


def drop_in_loop(layer: HttpLayer, *stream_ids: int) -> None:
    """Drop the streams as `DropStream` does, inside an event loop, and let it turn once."""

    async def drop() -> None:
        for stream_id in stream_ids:
            layer.streams.pop(stream_id, None)
        await asyncio.sleep(0)

    asyncio.run(drop())


def test_without_it_a_dropped_stream_is_cyclic_garbage() -> None:
    """The premise: mitmproxy's own stream outlives its last reference until the collector runs."""
    layer = http_layer()
    ref = add_stream(layer)
    drop_in_loop(layer, 1)
    assert ref() is not None
    gc.collect()
    assert ref() is None


def test_a_dropped_stream_and_its_flow_are_freed_at_once(installed: None) -> None:
    layer = http_layer()
    assert type(layer.streams) is layer_cycles._Streams
    ref = add_stream(layer)
    flow = weakref.ref(ref().flow)  # type: ignore[union-attr]
    drop_in_loop(layer, 1)
    assert ref() is None
    assert flow() is None


def test_streams_are_released_after_the_event_that_dropped_them(installed: None) -> None:
    """Not while mitmproxy may still be running the stream's code: only on the event loop's next turn."""
    layer = http_layer()
    refs = [add_stream(layer, i) for i in (1, 3, 5)]

    async def drop() -> None:
        layer.streams.pop(1)
        layer.streams.pop(3, None)
        layer.streams.pop(7, None)  # not there: nothing to release
        stream = refs[0]()
        assert stream is not None
        assert stream.client_state == stream.state_uninitialized  # not yet
        assert stream.context.layers[-1] is stream
        del stream
        await asyncio.sleep(0)

    asyncio.run(drop())
    assert [r() is None for r in refs] == [True, True, False]
    assert list(layer.streams) == [5]


def test_a_stream_waiting_for_a_reply_is_left_to_the_collector(installed: None) -> None:
    layer = http_layer()
    ref, done = add_stream(layer, 1), add_stream(layer, 3)
    waiting: Any = ref()
    waiting._paused = object()
    del waiting
    drop_in_loop(layer, 1, 3)
    assert done() is None  # released, beside it
    stream = ref()
    assert stream is not None
    assert stream.context.layers[-1] is stream  # untouched
    assert stream.client_state == stream.state_uninitialized


def test_a_released_stream_ignores_late_events(installed: None) -> None:
    """Even a late protocol error: mitmproxy's own finished stream answers one with no hook and no error."""
    layer = http_layer()
    stream = HttpStream(layer.context.fork(), 1)
    stream.flow = tflow.tflow(resp=True)
    assert "mode" not in vars(stream)
    assert layer_cycles.release(stream)
    assert stream not in stream.context.layers
    assert stream.mode is HTTPMode.regular  # computed before the list lost the stream
    for late in (
        ResponseProtocolError(1, "upstream went away", ErrorCode.GENERIC_SERVER_ERROR),
        RequestProtocolError(1, "client went away", ErrorCode.GENERIC_CLIENT_ERROR),
        ResponseData(1, b"data: late"),
    ):
        assert list(stream.handle_event(late)) == []
    assert stream.flow.error is None
    assert stream._paused is None


def test_without_an_event_loop_the_stream_is_the_collectors(installed: None) -> None:
    layer = http_layer()
    ref = add_stream(layer)
    assert layer.streams.pop(1) is not None
    assert ref() is not None
    gc.collect()
    assert ref() is None


def test_install_is_once_per_process(installed: None) -> None:
    init = HttpLayer.__init__
    assert layer_cycles.install()
    assert HttpLayer.__init__ is init
    assert type(http_layer().streams) is layer_cycles._Streams


COUNTER = '''
import gc

from mitmproxy import http


class CountStreams:
    """GET /streamtap-test/streams: how many of mitmproxy's HTTP streams are alive, the young collected."""

    def request(self, flow: http.HTTPFlow) -> None:
        gc.set_threshold(700, 10, 1_000_000)  # no full collection in this process: what it leaves, stays
        if flow.request.path == "/streamtap-test/streams":
            gc.collect(1)
            alive = sum(type(o).__name__ == "HttpStream" for o in gc.get_objects())
            flow.response = http.Response.make(200, str(alive).encode())

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        gc.collect(1)  # the exchange, alive, moves to the oldest generation, as a long stream's does


addons = [CountStreams()]
'''


@pytest.mark.slow
def test_a_real_proxy_frees_each_finished_exchange(tmp_path: Path) -> None:
    """The openai SDK through `streamtap proxy`, no full collection: what is left of 20 exchanges."""
    script = tmp_path / "count_streams.py"
    script.write_text(COUNTER)
    upstream = MockUpstream(profile="fast", seed=3)
    upstream.start()
    try:
        with (
            ProxyProcess(
                f"sqlite:///{tmp_path / 'tap.db'}",
                tmp_path,
                upstream=upstream.url,
                extra=["--set", f"scripts={script}"],
                metrics=False,
            ) as proxy,
            openai.OpenAI(
                base_url=proxy.url + "/v1", api_key="sk-cycles", max_retries=0, timeout=30
            ) as client,
        ):
            for i in range(20):
                stream = client.chat.completions.create(
                    model="mock-fast", stream=True, messages=[{"role": "user", "content": f"exchange {i}"}]
                )
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            alive = int(httpx.get(proxy.url + "/streamtap-test/streams", timeout=10).text)
    finally:
        upstream.stop()
    assert alive <= 2, f"{alive} HttpStreams alive after 20 finished exchanges (the counting request is one)"
