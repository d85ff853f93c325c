"""The baseline: a mitmproxy addon that only streams event streams, as any streaming proxy must.

Run as `mitmdump -s bench/bare_addon.py --mode reverse:URL`. It does what streamtap's addon does to the
response minus the tap: `flow.response.stream = True` for `text/event-stream` responses.
"""

from __future__ import annotations

from mitmproxy import http


def responseheaders(flow: http.HTTPFlow) -> None:
    resp = flow.response
    if resp is None:
        return
    content_type = resp.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() == "text/event-stream":
        resp.stream = True
