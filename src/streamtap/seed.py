"""Synthetic recordings for demos, tests and benchmarks: `seed_database(engine, streams=N, ...)`.

The rows look like what the recorder writes for real OpenAI-compatible traffic: several models behind
several upstreams and API keys, log-normal TTFT and inter-chunk gaps (with the odd multi-second stall and
one slow hour on one upstream), reasoning and tool-call streams, every finish reason and every final
outcome. Each stream's events are the exact SSE bytes its `choices` column was reconstructed from, so the
stream page and the exports show consistent data. Inserts are executemany in batches.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa

from .db import packs
from .db.models import Stream
from .mock_text import fragments, text_pieces
from .privacy import fingerprint
from .records import EventKind, EventRecord, Outcome

_streams = cast(sa.Table, Stream.__table__)

BATCH = 2_000  # streams per transaction


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How one model behaves: where it is served, how fast it starts and streams, what it does."""

    model: str
    host: str
    weight: int
    ttft_ms: float  # median; log-normal with `ttft_sigma`
    ttft_sigma: float
    gap_ms: float  # median inter-chunk gap; log-normal with `gap_sigma`
    gap_sigma: float
    reasoning: bool = False
    tools: float = 0.0  # share of requests that end in tool calls


PROFILES: tuple[ModelProfile, ...] = (
    ModelProfile("gpt-4o", "api.openai.com", 28, 420.0, 0.45, 24.0, 0.55, tools=0.12),
    ModelProfile("gpt-4o-mini", "api.openai.com", 24, 280.0, 0.40, 11.0, 0.50, tools=0.08),
    ModelProfile("o3-mini", "api.openai.com", 9, 2600.0, 0.55, 8.0, 0.50, reasoning=True),
    ModelProfile("deepseek-reasoner", "api.deepseek.com", 9, 1300.0, 0.65, 30.0, 0.60, reasoning=True),
    ModelProfile("llama-3.3-70b-versatile", "api.groq.com", 18, 150.0, 0.50, 3.5, 0.60),
    ModelProfile("mistral-large-latest", "openrouter.ai", 12, 650.0, 0.55, 19.0, 0.55, tools=0.10),
)
API_KEYS: tuple[str, ...] = tuple(
    fingerprint(k) for k in ("sk-seed-web", "sk-seed-batch", "sk-seed-mobile", "sk-seed-eval", "sk-seed-dev")
)
_KEY_WEIGHTS = (40, 25, 20, 10, 5)
PROXY_INSTANCE = "seed:8080"
SLOW_HOST = "openrouter.ai"  # has one bad hour: TTFT x4, gaps x3

# Shares of each final outcome; the rest complete.
_HTTP_ERROR, _MODEL_ERROR, _UPSTREAM_DISC, _CLIENT_DISC, _TRUNCATED = 0.02, 0.008, 0.008, 0.015, 0.004
_STALL = 0.003  # chance that a gap is a stall of 1.5-8 s


@dataclass(frozen=True, slots=True)
class SeedResult:
    streams: int
    events: int


def seed_database(
    engine: sa.Engine,
    *,
    streams: int,
    events_per_stream: int = 20,
    seed: int = 0,
    now: datetime | None = None,
    span: timedelta = timedelta(hours=24),
) -> SeedResult:
    """Insert `streams` finished streams started over the `span` before `now`, with about
    `events_per_stream` events each on average. The same `seed` (and `now`) gives the same rows.

    The database must already be migrated.
    """
    if streams < 0 or events_per_stream < 1:
        raise ValueError("streams must be >= 0 and events_per_stream >= 1")
    end = (now or datetime.now(UTC)).astimezone(UTC)
    rng = random.Random(seed)
    gen = _Generator(rng, end - span, span, events_per_stream)
    total = 0
    done = 0
    while done < streams:
        n = min(BATCH, streams - done)
        stream_rows: list[dict[str, Any]] = []
        pack_rows: list[tuple[Any, ...]] = []
        for _ in range(n):
            row, evs = gen.stream()
            stream_rows.append(row)
            pack = packs.pack(row["id"], evs)
            if pack is not None:
                pack_rows.append(pack)
            total += len(evs)
        with engine.begin() as conn:
            conn.execute(sa.insert(_streams), stream_rows)
            if pack_rows:
                conn.exec_driver_sql(packs.insert_sql(engine.dialect), pack_rows)
        done += n
    return SeedResult(streams=done, events=total)


class _Generator:
    def __init__(self, rng: random.Random, start: datetime, span: timedelta, events: int) -> None:
        self.rng = rng
        self.start = start
        self.span_s = span.total_seconds()
        self.events = events
        # The bad hour sits at two thirds of the span (clamped for short spans).
        mid = start + span * (2 / 3)
        self.slow = (mid, mid + min(timedelta(hours=1), span / 12))
        self.weights = [p.weight for p in PROFILES]

    def stream(self) -> tuple[dict[str, Any], list[EventRecord]]:
        rng = self.rng
        profile = rng.choices(PROFILES, self.weights)[0]
        started = self.start + timedelta(seconds=rng.random() * self.span_s)
        slow = profile.host == SLOW_HOST and self.slow[0] <= started < self.slow[1]
        sid = f"{rng.getrandbits(128):032x}"
        created = int(started.timestamp())
        row: dict[str, Any] = {
            "id": sid,
            "started_at": started,
            "method": "POST",
            "url": f"https://{profile.host}/v1/chat/completions",
            "host": profile.host,
            "path": "/v1/chat/completions",
            "stream": True,
            "api": "openai.chat",
            "request_model": profile.model,
            "model": profile.model,
            "api_key_fp": rng.choices(API_KEYS, _KEY_WEIGHTS)[0],
            "proxy_instance": PROXY_INSTANCE,
            "content_encoding": None,
            "request_body": json.dumps(
                {"model": profile.model, "stream": True, "messages": [{"role": "user", "content": "…"}]}
            ),
            "response_body": None,
            "tap_errors": 0,
            "extra": {},
            "error": None,
            "finish_reason": None,
            "ttfb_ms": None,
            "ttft_ms": None,
            "ttfc_ms": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "total_tokens": None,
            "reasoning_tokens": None,
        }
        r = rng.random()
        if r < _HTTP_ERROR:
            return self._http_error(row, started), []
        r -= _HTTP_ERROR
        outcome = Outcome.COMPLETED
        for share, name in (
            (_MODEL_ERROR, Outcome.MODEL_ERROR),
            (_UPSTREAM_DISC, Outcome.UPSTREAM_DISCONNECT),
            (_CLIENT_DISC, Outcome.CLIENT_DISCONNECT),
            (_TRUNCATED, Outcome.TRUNCATED),
        ):
            if r < share:
                outcome = name
                break
            r -= share
        return self._streamed(row, profile, outcome, slow, sid, created, started)

    def _http_error(self, row: dict[str, Any], started: datetime) -> dict[str, Any]:
        rng = self.rng
        status, message = rng.choices(
            [
                (429, "Rate limit reached for requests"),
                (500, "The server had an error"),
                (502, "Bad gateway"),
            ],
            [8, 1, 1],
        )[0]
        duration = rng.lognormvariate(math.log(90.0), 0.5)
        body = json.dumps({"error": {"message": message, "type": "server_error", "code": None}})
        row.update(
            status_code=status,
            stream=False,
            outcome=Outcome.HTTP_ERROR.value,
            error=f"HTTP {status}: {message}",
            ttfb_ms=duration,
            duration_ms=duration,
            response_body=body,
            choices=[],
            event_count=0,
            token_event_count=0,
            finished_at=started + timedelta(milliseconds=duration),
        )
        return row

    def _streamed(
        self,
        row: dict[str, Any],
        p: ModelProfile,
        outcome: Outcome,
        slow: bool,
        sid: str,
        created: int,
        started: datetime,
    ) -> tuple[dict[str, Any], list[EventRecord]]:
        rng = self.rng
        ttft = rng.lognormvariate(math.log(p.ttft_ms * (4 if slow else 1)), p.ttft_sigma)
        gap_mu = math.log(p.gap_ms * (3 if slow else 1))
        # role, finish, usage and [DONE] come on top of the token events
        n_tokens = max(1, round(self.events * rng.uniform(0.5, 1.5)) - 4)
        tools = p.tools > 0 and rng.random() < p.tools
        finish = "stop"
        if tools:
            finish = "tool_calls"
        elif rng.random() < 0.07:
            finish = "length"
        elif rng.random() < 0.01:
            finish = "content_filter"
        # what each token event carries: (field, text)
        deltas: list[tuple[str, str]] = []
        n_reasoning = n_tokens * 2 // 3 if p.reasoning and n_tokens > 2 else 0
        deltas += [("reasoning_content", t) for t in text_pieces(rng, n_reasoning)]
        call: dict[str, Any] | None = None
        if tools:
            args = json.dumps({"city": rng.choice(("Lisbon", "Oslo", "Kyoto", "Lima")), "unit": "celsius"})
            call = {"index": 0, "id": "call_" + f"{rng.getrandbits(96):024x}", "name": "get_weather"}
            call["arguments"] = args
            deltas.append(("tool_head", ""))
            deltas += [("arguments", a) for a in fragments(rng, args, 2, 8)]
        else:
            deltas += [("content", t) for t in text_pieces(rng, n_tokens - n_reasoning, finish == "stop")]
        cut: int | None = None
        if outcome is not Outcome.COMPLETED:
            cut = rng.randint(0, max(0, len(deltas) - 1))

        head = (
            f'data: {{"id":"chatcmpl-{sid[:24]}","object":"chat.completion.chunk","created":{created},'
            f'"model":"{p.model}","choices":[{{"index":0,'
        )
        ttfb = ttft * rng.uniform(0.4, 0.9)
        events: list[EventRecord] = []
        t = ttfb
        prev: float | None = None

        def add(raw: str, *, kind: EventKind = EventKind.DATA, tokens: bool = False) -> None:
            nonlocal prev
            gap = None if prev is None else t - prev
            events.append(EventRecord(len(events), t, gap, kind, None, raw.encode(), None, tokens))
            prev = t

        add(head + '"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n')
        t = ttft
        content: list[str] = []
        reasoning: list[str] = []
        arguments: list[str] = []
        first_content: float | None = None
        called = False
        for i, (field, text) in enumerate(deltas):
            if i:
                t += self._gap(gap_mu, p.gap_sigma)
            if cut is not None and i == cut:
                break
            if field == "tool_head" and call is not None:
                called = True
                delta = (
                    f'{{"tool_calls":[{{"index":0,"id":"{call["id"]}","type":"function",'
                    f'"function":{{"name":"{call["name"]}","arguments":""}}}}]}}'
                )
            elif field == "arguments":
                arguments.append(text)
                delta = f'{{"tool_calls":[{{"index":0,"function":{{"arguments":{json.dumps(text)}}}}}]}}'
            else:
                delta = f'{{"{field}":{json.dumps(text, ensure_ascii=False)}}}'
                if field == "content":
                    content.append(text)
                    if first_content is None:
                        first_content = t
                else:
                    reasoning.append(text)
            # a tool call's first delta names it: no generated text yet
            add(head + f'"delta":{delta},"finish_reason":null}}]}}\n\n', tokens=field != "tool_head")

        n_events = sum(1 for e in events if e.tokens)
        completion = n_events
        prompt = rng.randint(20, 1800)
        error = None
        reason: str | None = None
        if outcome is Outcome.COMPLETED:
            reason = finish
            t += rng.uniform(0.2, 3.0)
            add(head + f'"delta":{{}},"finish_reason":"{finish}"}}]}}\n\n')
            usage = json.dumps(
                {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "completion_tokens_details": {"reasoning_tokens": len(reasoning)},
                },
                separators=(",", ":"),
            )
            t += rng.uniform(0.1, 1.0)
            add(head.replace('"choices":[{"index":0,', '"choices":[],"usage":') + usage + "}\n\n")
            t += rng.uniform(0.05, 0.5)
            add("data: [DONE]\n\n", kind=EventKind.DONE)
        elif outcome is Outcome.MODEL_ERROR:
            error = "The server had an error processing your request."
            t += rng.uniform(5.0, 400.0)
            add(f'data: {{"error":{{"message":"{error}","type":"server_error"}}}}\n\n', kind=EventKind.ERROR)
        elif outcome is Outcome.UPSTREAM_DISCONNECT:
            error = "upstream closed the connection mid-stream"
            t += rng.uniform(1000.0, 30000.0)
        elif outcome is Outcome.CLIENT_DISCONNECT:
            error = "client disconnected"
            t += rng.uniform(0.5, 50.0)
        duration = t + rng.uniform(0.1, 2.0)

        first_token = next((e.t_ms for e in events if e.tokens), None)
        choice: dict[str, Any] = {
            "index": 0,
            "content": "".join(content) or None,
            "reasoning_content": "".join(reasoning) or None,
            "refusal": None,
            "tool_calls": [],
            "finish_reason": reason,
        }
        if call is not None and called:
            choice["tool_calls"] = [{**call, "arguments": "".join(arguments)}]
        row.update(
            status_code=200,
            outcome=outcome.value,
            finish_reason=reason,
            error=error,
            ttfb_ms=ttfb,
            ttft_ms=first_token,
            ttfc_ms=first_content,
            duration_ms=duration,
            choices=[choice],
            event_count=len(events),
            token_event_count=n_events,
            finished_at=started + timedelta(milliseconds=duration),
        )
        if outcome is Outcome.COMPLETED:
            row.update(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                reasoning_tokens=len(reasoning),
            )
        return row, events

    def _gap(self, mu: float, sigma: float) -> float:
        rng = self.rng
        if rng.random() < _STALL:
            return rng.uniform(1500.0, 8000.0)
        return rng.lognormvariate(mu, sigma)


def main(argv: list[str] | None = None) -> int:
    """`python -m streamtap.seed --db URL --streams N`: migrate a database and fill it with synthetic data."""
    from .db.engine import make_engine, upgrade
    from .errors import StreamtapError

    parser = argparse.ArgumentParser(prog="python -m streamtap.seed", description=main.__doc__)
    parser.add_argument("--db", required=True, help="database URL (sqlite:///PATH or postgresql://...)")
    parser.add_argument("--streams", type=int, default=2_000)
    parser.add_argument("--events-per-stream", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=24.0, help="the time span the streams cover")
    args = parser.parse_args(argv)
    try:
        engine = make_engine(args.db)
        try:
            upgrade(engine)
            began = time.perf_counter()
            result = seed_database(
                engine,
                streams=args.streams,
                events_per_stream=args.events_per_stream,
                seed=args.seed,
                span=timedelta(hours=args.hours),
            )
        finally:
            engine.dispose()
    except StreamtapError as e:
        print(f"streamtap: error: {e}", file=sys.stderr)
        return 1
    took = time.perf_counter() - began
    print(f"seeded {result.streams} streams and {result.events} events in {took:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
