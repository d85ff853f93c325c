"""What the simulated provider answers, decided before a byte is sent: pure functions, no I/O.

`plan_chat` turns a chat-completions request (body, control headers, timing profile, seed) into either a
`Reply` (one JSON body) or a `Stream` (a list of timed SSE events). Chunk layout follows OpenAI's wire
format as recorded in `../shared/sse-corpus/openai_chat_*.sse`; reasoning deltas follow DeepSeek
(`deepseek_reasoner_reasoning_content.sse`), the in-band error chunk follows OpenRouter
(`openrouter_error_in_data_midstream.sse`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamtap import mock_text
from streamtap.mock_controls import FAULTS, Controls, Profile, Timing, parse_controls, profile_for

MODELS = ("mock-gpt", "mock-gpt-mini", "mock-fast", "mock-reasoner", *(f"mock-fault-{f}" for f in FAULTS))
_HTTP_FAULTS = {
    "http-429": (
        429,
        "Rate limit reached for requests. Please try again in 2s.",
        "requests",
        "rate_limit_exceeded",
    ),
    "http-500": (
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    "http-502": (502, "Bad gateway.", "server_error", None),
}
_INVALID = "@@invalid-utf8@@"  # stands in for the broken bytes while the chunk is JSON-encoded


@dataclass(frozen=True, slots=True)
class Step:
    """One SSE event (or comment) to write, `delay` seconds after the previous write, or after the
    request was read when `from_request` (the first token: that delay is the TTFT)."""

    payload: bytes
    kind: str  # role, delta, finish, usage, done, error, broken, comment
    delay: float = 0.0
    from_request: bool = False
    choice: int = 0
    field: str | None = None  # "content" or "reasoning_content": the log keeps the text sent
    text: str = ""

    @property
    def token(self) -> bool:
        return self.kind == "delta"


@dataclass(frozen=True, slots=True)
class Stream:
    completion_id: str
    model: str
    steps: tuple[Step, ...]
    headers: tuple[tuple[str, str], ...]
    fault: str | None = None
    abort: bool = False  # end by closing the connection, without the last chunk of the chunked body
    gzip: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    completion_id: str = ""
    model: str = ""
    delay: float = 0.0
    fault: str | None = None
    abort: bool = False


@dataclass(slots=True)
class _Choice:
    deltas: list[tuple[dict[str, Any], str | None, str]] = field(default_factory=list)
    finish_reason: str = "stop"
    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _chunk(
    head: dict[str, Any], index: int, delta: dict[str, Any], finish: str | None, **extra: Any
) -> bytes:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return b"data: " + dumps({**head, "choices": [choice], **extra}) + b"\n\n"


def error_reply(status: int, message: str, kind: str, code: str | None = None, **extra: Any) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    headers = (("content-type", "application/json"), *((k, str(v)) for k, v in extra.items()))
    return Reply(status, json.dumps(body, indent=2).encode() + b"\n", headers)


def _tools_to_call(req: dict[str, Any], controls: Controls, text: str) -> list[dict[str, Any]]:
    tools = [
        t["function"]
        for t in req.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    ]
    choice = req.get("tool_choice")
    if not tools or choice == "none":
        return []
    lowered = text.lower()
    mentioned = [t for t in tools if str(t["name"]).lower() in lowered]
    if isinstance(choice, dict):
        named = choice.get("function", {}).get("name")
        mentioned = [t for t in tools if t["name"] == named] or mentioned
    count = controls.tool_calls
    if count is None:
        asked = bool(re.search(r"\b(tools?|functions?|call)\b", lowered)) or choice == "required"
        count = len(mentioned) or (1 if asked or isinstance(choice, dict) else 0)
    if req.get("parallel_tool_calls") is False:
        count = min(count, 1)
    pool = mentioned + [t for t in tools if t not in mentioned]
    return [pool[i % len(pool)] for i in range(count)]


def _plan_choice(req: dict[str, Any], controls: Controls, profile: Profile, rng: random.Random) -> _Choice:
    out = _Choice()
    model = str(req["model"]).lower()
    reasoner = "reason" in model
    tools = _tools_to_call(req, controls, mock_text.last_user_text(req["messages"]))
    if reasoner:
        pieces = mock_text.text_pieces(rng, rng.randint(15, 50))
        out.reasoning = "".join(pieces)
        out.deltas += [({"content": None, "reasoning_content": p}, "reasoning_content", p) for p in pieces]
    if tools:
        out.finish_reason = "tool_calls"
        for index, tool in enumerate(tools):
            call_id = "call_" + mock_text.random_id(rng, 24)
            args = mock_text.tool_arguments(rng, tool.get("parameters"))
            out.tool_calls.append(
                {"id": call_id, "type": "function", "function": {"name": tool["name"], "arguments": args}}
            )
            head = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": tool["name"], "arguments": ""},
            }
            out.deltas.append(({"tool_calls": [head]}, None, ""))
            out.deltas += [
                ({"tool_calls": [{"index": index, "function": {"arguments": frag}}]}, None, "")
                for frag in mock_text.fragments(rng, args)
            ]
        return out
    count = controls.chunks if controls.chunks is not None else rng.randint(*profile.chunks)
    limit = req.get("max_completion_tokens") or req.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < count:
        count, out.finish_reason = limit, "length"
    pieces = mock_text.text_pieces(rng, count, complete=out.finish_reason == "stop")
    out.content = "".join(pieces)
    out.deltas += [
        ({"content": p, "reasoning_content": None} if reasoner else {"content": p}, "content", p)
        for p in pieces
    ]
    return out


def _usage(req: dict[str, Any], choices: list[_Choice]) -> dict[str, Any]:
    prompt = mock_text.estimate_prompt_tokens(req["messages"])
    completion = sum(len(c.deltas) for c in choices)
    reasoning = sum(1 for c in choices for _, f, _ in c.deltas if f == "reasoning_content")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion(req: dict[str, Any], head: dict[str, Any], choices: list[_Choice]) -> bytes:
    out = []
    for i, c in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": c.content or None}
        if "reason" in str(req["model"]).lower():
            message["reasoning_content"] = c.reasoning
        if c.tool_calls:
            message["tool_calls"] = c.tool_calls
        message |= {"refusal": None, "annotations": []}
        out.append({"index": i, "message": message, "logprobs": None, "finish_reason": c.finish_reason})
    body = {**head, "object": "chat.completion", "choices": out, "usage": _usage(req, choices)}
    return json.dumps(body, indent=2, ensure_ascii=False).encode()


def _events(req: dict[str, Any], head: dict[str, Any], choices: list[_Choice], timing: Timing) -> list[Step]:
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}  # OpenAI adds `usage: null` only when asked for usage

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _chunk(head, index, delta, finish, **extra)

    reasoner = "reason" in str(req["model"]).lower()
    steps = []
    for i, c in enumerate(choices):
        role: dict[str, Any] = {"role": "assistant", "content": None if c.tool_calls or reasoner else ""}
        steps.append(Step(chunk(i, role | ({"reasoning_content": ""} if reasoner else {})), "role"))
    queues = [list(reversed(c.deltas)) for c in choices]
    first = True
    while any(queues):
        for i, queue in enumerate(queues):
            if not queue:
                continue
            delta, field_name, text = queue.pop()
            delay = timing.ttft() if first else timing.gap()
            steps.append(Step(chunk(i, delta), "delta", delay, first, i, field_name, text))
            first = False
            if not queue:
                steps.append(Step(chunk(i, {}, choices[i].finish_reason), "finish", timing.gap()))
    steps += [
        Step(chunk(i, {}, c.finish_reason), "finish", timing.gap())
        for i, c in enumerate(choices)
        if not c.deltas
    ]
    if include_usage:
        usage = dumps({**head, "choices": [], "usage": _usage(req, choices)})
        steps.append(Step(b"data: " + usage + b"\n\n", "usage"))
    steps.append(Step(b"data: [DONE]\n\n", "done"))
    return steps


def _with_fault(steps: list[Step], head: dict[str, Any], controls: Controls, timing: Timing) -> list[Step]:
    fault, at = controls.fault, min(controls.fault_after, len(steps) - 1)
    if fault == "error-event":
        error = {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
        return [
            *steps[:at],
            Step(b"event: error\ndata: " + dumps({"error": error}) + b"\n\n", "error", timing.gap()),
        ]
    if fault == "error-data":
        chunk = {
            **head,
            "provider": "mock",
            "error": {"code": 502, "message": "Upstream provider error"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
        return [*steps[:at], Step(b"data: " + dumps(chunk) + b"\n\n", "error", timing.gap()), steps[-1]]
    if fault == "disconnect":
        return steps[: controls.fault_after]
    if fault == "no-finish":
        return [s for s in steps if s.kind in ("role", "delta")]
    inserted: Step | None = None
    if fault == "huge-event":
        filler = " ".join(mock_text.WORDS) + " "
        text = (filler * (controls.huge_bytes // len(filler) + 1))[: controls.huge_bytes]
        payload = _chunk(head, 0, {"content": text}, None)
        inserted = Step(payload, "delta", timing.gap(), field="content", text=text)
    elif fault == "invalid-utf8":
        payload = _chunk(head, 0, {"content": _INVALID}, None).replace(_INVALID.encode(), b"caf\xc3(\xff")
        inserted = Step(payload, "broken", timing.gap())
    elif fault == "non-json":
        inserted = Step(b"data: not json\n\n", "broken", timing.gap())
    if inserted is not None:
        return [*steps[:at], inserted, *steps[at:]]
    if fault == "keepalive":
        out: list[Step] = []
        for s in steps:
            if s.delay > 0:
                half = s.delay / 2
                out.append(Step(b": keep-alive\n\n", "comment", half))
                s = s if s.from_request else replace(s, delay=s.delay - half)
            out.append(s)
        return out
    return steps


def plan_chat(
    body: bytes, headers: Mapping[str, str], profile: str, seed: int | None, completion_id: str
) -> Reply | Stream:
    """The whole answer to one chat-completions request. `headers` has lower-case names."""
    try:
        req = json.loads(body)
    except ValueError:
        return error_reply(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    if not isinstance(req, dict) or not isinstance(req.get("model"), str) or not req["model"]:
        return error_reply(400, "You must provide a model parameter.", "invalid_request_error")
    model = req["model"]
    messages, n = req.get("messages"), req.get("n") or 1
    if not isinstance(messages, list) or not messages:
        return error_reply(400, "Missing required parameter: 'messages'.", "invalid_request_error")
    if not isinstance(n, int) or not 1 <= n <= 16:
        return error_reply(400, "'n' must be an integer between 1 and 16.", "invalid_request_error")
    try:
        controls = parse_controls(headers, model)
    except ValueError as e:
        return error_reply(400, f"Invalid mock control header: {e}", "invalid_request_error")
    if controls.fault in _HTTP_FAULTS:
        status, message, kind, code = _HTTP_FAULTS[controls.fault]
        retry = {"retry-after": 2} if status == 429 else {}
        reply = error_reply(status, message, kind, code, **retry)
        return replace(reply, completion_id=completion_id, model=model, fault=controls.fault)
    digest = hashlib.sha256(dumps(messages)).hexdigest()[:16]
    key = (
        f"{seed}/{req.get('seed')}/{model}/{digest}"
        if seed is not None or "seed" in req
        else secrets.token_hex()
    )
    rng, timing = (
        random.Random(key + "/text"),
        Timing(profile_for(profile, model), controls, random.Random(key)),
    )
    choices = [_plan_choice(req, controls, timing.profile, rng) for _ in range(n)]
    fingerprint = "fp_" + hashlib.sha1(model.encode()).hexdigest()[:10]
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
    }
    if not req.get("stream"):
        delay = timing.ttft() + sum(timing.gap() for _ in range(max(len(c.deltas) for c in choices) - 1))
        fault = controls.fault if controls.fault in ("disconnect", "slow-first-token") else None
        json_headers = (("content-type", "application/json"),)
        body_out = _completion(req, head, choices)
        return Reply(200, body_out, json_headers, completion_id, model, delay, fault, fault == "disconnect")
    steps = _with_fault(_events(req, head, choices, timing), head, controls, timing)
    headers_out = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
    if controls.fault == "gzip":
        headers_out.append(("content-encoding", "gzip"))
    is_fault = controls.fault
    return Stream(
        completion_id,
        model,
        tuple(steps),
        tuple(headers_out),
        is_fault,
        is_fault == "disconnect",
        is_fault == "gzip",
    )
