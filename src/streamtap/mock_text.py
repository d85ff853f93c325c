"""Deterministic filler for the simulated provider: English-like text split into token-sized pieces,
tool-call arguments that fit a JSON schema, and rough token counts. Pure functions of a `random.Random`.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

_VOCABULARY = (
    "the a an of to in for on with by from about into over after before between through during model "
    "stream token request response latency server client network proxy cache buffer event system "
    "signal record window sequence answer question context pattern number value result simple "
    "careful quick steady clear useful small large early late modern typical reliable is are was can "
    "will should might does makes takes gives shows keeps reads writes sends returns measures "
    "compares follows explains describes suggests improves reduces handles first second next final "
    "every each other several many most some this that these those we you it they our its their when "
    "while because although since unless whether however usually often rarely quickly slowly "
    "directly carefully simply probably certainly data time rate limit error retry timeout "
    "connection message content reasoning approach example detail summary version interface protocol "
    "transfer encoding chunk boundary observability measurement throughput distribution percentile "
    "histogram dashboard"
)
WORDS = tuple(_VOCABULARY.split())

ALPHANUMERIC = string.ascii_letters + string.digits


def random_id(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(ALPHANUMERIC, k=length))


def _sentence(rng: random.Random, size: int, first: bool) -> list[str]:
    """Exactly `size` pieces (size >= 2): words with a leading space, the odd comma, a final period."""
    pieces: list[str] = []
    while len(pieces) < size - 1:
        room = size - 1 - len(pieces)
        word = rng.choice(WORDS)
        if not pieces:
            word = word.capitalize()
        if pieces and pieces[-1] != "," and room >= 2 and rng.random() < 0.07:
            pieces.append(",")
            continue
        # long words arrive as two tokens, as BPE tokenizers would split them
        if len(word) >= 8 and room >= 2 and rng.random() < 0.4:
            cut = rng.randint(3, len(word) - 3)
            pieces += [" " + word[:cut], word[cut:]]
        else:
            pieces.append(" " + word)
    if first:
        pieces[0] = pieces[0].lstrip()
    pieces.append(".")
    return pieces


def text_pieces(rng: random.Random, count: int, complete: bool = True) -> list[str]:
    """`count` content deltas of English-like text. `complete=False` stops mid-sentence (`length`)."""
    budget = count if complete else count + 16
    pieces: list[str] = []
    while len(pieces) < budget:
        remaining = budget - len(pieces)
        if remaining == 1:
            word = rng.choice(WORDS) + "."
            pieces.append(word.capitalize() if not pieces else " " + word)
            break
        size = remaining if remaining <= 16 else rng.randint(6, 16)
        if 0 < remaining - size < 2:
            size = remaining
        paragraph = bool(pieces) and pieces[-1] == ".\n\n"
        pieces += _sentence(rng, size, first=not pieces or paragraph)
        if len(pieces) < budget and rng.random() < 0.12:
            pieces[-1] = ".\n\n"
    return pieces[:count]


def fragments(rng: random.Random, text: str, low: int = 1, high: int = 8) -> list[str]:
    """Split `text` into consecutive fragments of `low`..`high` characters (tool-call argument deltas)."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        step = rng.randint(low, high)
        out.append(text[pos : pos + step])
        pos += step
    return out


def _value(rng: random.Random, schema: Any, depth: int) -> Any:
    if not isinstance(schema, dict):
        return " ".join(rng.choices(WORDS, k=2))
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" and depth < 4:
        props = schema.get("properties") or {}
        return {name: _value(rng, sub, depth + 1) for name, sub in props.items()}
    if kind == "array" and depth < 4:
        return [_value(rng, schema.get("items", {}), depth + 1) for _ in range(rng.randint(1, 2))]
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return " ".join(rng.choices(WORDS, k=rng.randint(1, 3))).capitalize()


def tool_arguments(rng: random.Random, parameters: Any) -> str:
    """A JSON object matching a tool's `parameters` schema, spaced the way OpenAI models write it."""
    value = _value(rng, parameters if isinstance(parameters, dict) else {"type": "object"}, 0)
    return json.dumps(value if isinstance(value, dict) else {"value": value})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """About four characters per token plus a few tokens of framing per message, like tiktoken's cookbook."""
    total = 3
    for message in messages:
        if isinstance(message, dict):
            total += 4 + len(_text_of(message.get("content"))) // 4
    return total
