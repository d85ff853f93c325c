"""The chat interpreter's learned chunk shapes (`chat._Shape`): a chunk read by its shape means exactly what
parsing it would have meant, on every recording and on chunks built to look almost like a learned one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import patches_compiled
from streamtap import chat
from streamtap.chat import ChatInterpreter
from streamtap.semantics import Interpretation
from streamtap.sse import ItemKind, SSEItem, decode_all

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
FILES = sorted(CORPUS.glob("*.sse"))


class Counted:
    """`chat.loads` with a count of its calls: a chunk read by its shape is never parsed."""

    def __init__(self) -> None:
        self.calls = 0
        self._loads = chat.loads

    def __call__(self, text: str) -> Any:
        self.calls += 1
        return self._loads(text)


def state(interp: ChatInterpreter) -> tuple[Any, ...]:
    return (interp.choices(), interp.usage, interp.model, interp.error, interp.saw_done, interp.saw_finish)


def both(items: list[SSEItem]) -> tuple[list[Interpretation], list[Interpretation], ChatInterpreter, int]:
    """Feeds `items` to an interpreter that learns shapes and to one that never does; asserts they agree.
    Returns the meanings, the learning interpreter and how many items it parsed."""
    plain = ChatInterpreter()
    plain._learn_budget = 0
    learning = ChatInterpreter()
    counted = Counted()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chat, "loads", counted)
        learned = [learning.feed(item) for item in items]
    parsed = [plain.feed(item) for item in items]
    assert learned == parsed
    assert state(learning) == state(plain)
    return learned, parsed, learning, counted.calls


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_recording_means_the_same_with_shapes(path: Path) -> None:
    both(decode_all(path.read_bytes()))


@patches_compiled
@pytest.mark.parametrize(
    ("name", "at_most"),
    [
        # OpenAI: every chunk ends in a random "obfuscation" string, which the shape leaves out
        ("openai_chat_text_include_usage.sse", 1),
        ("azure_openai_role_chunk_without_delta.sse", 1),
        # content with escapes ("\n"), read by its shape too
        ("deepseek_chat_usage_without_include_usage.sse", 3),
        # reasoning: `{"content":null,"reasoning_content":"..."}`, then content
        ("deepseek_reasoner_reasoning_content.sse", 4),
        ("zai_glm_reasoning_content.sse", 5),
        # Groq's `{"reasoning":"...","channel":"analysis"}`
        ("groq_gptoss_reasoning_x_groq_usage.sse", 3),
    ],
)
def test_plain_text_chunks_are_read_by_their_shape(name: str, at_most: int) -> None:
    items = decode_all((CORPUS / name).read_bytes())
    meanings, _, learning, parsed = both(items)
    texts = sum(1 for m in meanings if m.tokens)
    assert texts >= 8
    assert parsed <= at_most + (len(items) - texts)  # of the text chunks, at most `at_most` parsed
    assert learning._shape is not None


def item(data: str, event: str | None = None) -> SSEItem:
    return SSEItem(ItemKind.EVENT, b"data: " + data.encode("utf-8", "surrogatepass") + b"\n\n", data, event)


HEAD = '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":'
TAIL = ',"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"abc"}'
ROLE = HEAD + '{"role":"assistant","content":""}' + TAIL


def content_chunk(text: str, tail: str = TAIL, field: str = "content") -> str:
    return HEAD + "{" + json.dumps(field) + ":" + json.dumps(text, ensure_ascii=False) + "}" + tail


def delta_chunk(delta: str, text: str = "") -> str:
    """A chunk with this delta, its "@" replaced by `text`."""
    return HEAD + delta.replace("@", text) + TAIL


@patches_compiled
def test_a_learned_shape_reads_the_next_chunks() -> None:
    items = [item(ROLE), item(content_chunk("Hello")), *(item(content_chunk(f" w{k}")) for k in range(20))]
    meanings, _, learning, parsed = both(items)
    assert parsed == 2
    assert learning.choices()[0].content == "Hello" + "".join(f" w{k}" for k in range(20))
    assert all(m.content for m in meanings[1:])


ESCAPED = [
    'say "hi"',
    "a\\b",
    "line\nbreak",
    "tab\tand\r\nCRLF",
    "ends in a backslash\\",
    '\\"',  # a backslash, then a quote
    "\u2028 é 😀",  # escaped or not, depending on ensure_ascii
    "\x7f\x1f",
    '"},"finish_reason":"stop"}]}',  # the rest of a chunk, inside its text
]


@patches_compiled
@pytest.mark.parametrize("ascii_only", [False, True])
def test_a_learned_shape_reads_text_with_escapes(ascii_only: bool) -> None:
    """Escaped text is decoded (as parsing would decode it), not parsed as a whole chunk."""

    def chunk(text: str) -> str:
        return HEAD + '{"content":' + json.dumps(text, ensure_ascii=ascii_only) + "}" + TAIL

    items = [item(ROLE), item(chunk("Hello")), *(item(chunk(t)) for t in ESCAPED)]
    _, _, learning, parsed = both(items)
    assert parsed == 2
    assert learning.choices()[0].content == "Hello" + "".join(ESCAPED)


@pytest.mark.parametrize(
    "data",
    [
        content_chunk("a").replace('"a"', '"a\\"'),  # an escaped quote where the string should end
        content_chunk("a").replace('"a"', '"a\\q"'),  # not an escape JSON has
        content_chunk("a").replace('"a"', '"a\\u12"'),  # a short unicode escape
        content_chunk("a").replace('"a"', '"\\ud800"'),  # a lone surrogate's escape: orjson refuses it
        content_chunk("a").replace('"a"', '"\\n\x01"'),  # a raw control character after an escape
        content_chunk("a").replace('"a"', '"\\n" "x"'),  # two strings
        content_chunk("a").replace('"a"', '"\\n",' + '"content":"y"'),  # a second content key
        content_chunk(""),  # empty content: no tokens
        content_chunk("x").replace('"obfuscation":"abc"', '"obfuscation":"a\\"b"'),
        content_chunk("x").replace('"obfuscation":"abc"', '"obfuscation":"a\tb"'),  # raw tab: malformed
        content_chunk("x\x01y"),  # a raw control character in the content: malformed
        content_chunk("x").replace('"finish_reason":null', '"finish_reason":"stop"'),
        content_chunk("x").replace('"usage":null', '"usage":{"prompt_tokens":1,"completion_tokens":2}'),
        content_chunk("x").replace('"model":"m"', '"model":"other"'),
        content_chunk("x").replace('"index":0', '"index":1'),
        content_chunk("x")[:-1],  # cut short
        content_chunk("x") + " ",
        content_chunk("x") + "}",
        content_chunk("x").replace('"obfuscation":"abc"}', '"obfuscation":"abc","error":{"message":"e"}}'),
        content_chunk("x", tail=TAIL.replace('"obfuscation":"abc"}', '"x":{"obfuscation":"abc"}}')),
        HEAD + '{"content":"x","content":"y"}' + TAIL,  # a repeated key: the last one counts
        HEAD + '{"content":"x"},"finish_reason":"stop"' + TAIL,
        content_chunk("\u2028 \u00ad \u200d 😀 é"),  # not printable, still literal
        content_chunk("x").replace('"x"', '"a\ud800b"'),  # a lone surrogate: parsing refuses it
    ],
)
def test_a_chunk_unlike_the_learned_one_is_parsed(data: str) -> None:
    items = [item(ROLE), item(content_chunk("Hello")), item(data), item(content_chunk("after"))]
    both(items)
    both([*items, item(data, event="error")])


PLAIN_TAIL = ',"logprobs":null,"finish_reason":null}]}'
U1 = '"usage":{"prompt_tokens":1,"completion_tokens":1}'
U2 = '"usage":{"prompt_tokens":2,"completion_tokens":2}'


def escaped_key(meta: str) -> str:
    return '{"meta":{"content":"' + meta + '"},"choices":[{"index":0,"delta":{"cont\\u0065nt":"hi"}}]}'


@pytest.mark.parametrize(
    "chunks",
    [
        # without "obfuscation": the rest must be the same to the end
        [content_chunk(c, PLAIN_TAIL) + end for c, end in (("x", ""), ("y", "}"), ("z", ""))],
        # a chunk with usage teaches no shape: a later one with the same usage must count it again
        [
            content_chunk("x").replace('"usage":null', U1),
            '{"id":"c1","choices":[],' + U2 + "}",
            content_chunk("y").replace('"usage":null', U1),
        ],
        # "content" elsewhere, with the same text: not the delta's
        [
            content_chunk("hi").replace('"model":"m"', f'"model":"m","meta":{{"content":"{m}"}}')
            for m in ("hi", "zz")
        ],
        # the delta's key spelled with an escape, "content" elsewhere: not learned either
        [escaped_key("hi"), escaped_key("zz")],
        # a delta with more than the content: the rest means something too
        [content_chunk("x").replace('"x"}', '"x","reasoning_content":"r"}')] * 2,
        # a choice without an index (it counts as choice 0)
        [content_chunk("x").replace('"index":0,', ""), content_chunk("y").replace('"index":0,', "")],
        # reasoning, and what may stand beside it
        [delta_chunk('{"content":null,"reasoning_content":"@"}', t) for t in ("a", "b", "c")],
        [delta_chunk('{"reasoning_content":"@","reasoning":""}', t) for t in ("a", "", "c")],
        [
            delta_chunk('{"reasoning_content":"a","reasoning":""}'),
            delta_chunk('{"reasoning_content":"","reasoning":"b"}'),
            delta_chunk('{"reasoning_content":"c","reasoning":""}'),
        ],
        [delta_chunk('{"reasoning":"@","content":"x"}', t) for t in ("a", "b")],  # two texts
        [delta_chunk('{"refusal":"@","audio":{"transcript":"t"}}', t) for t in ("a", "b")],
        [
            delta_chunk('{"refusal":"@","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}', t)
            for t in ("a", "b")
        ],
        [
            delta_chunk('{"content":[{"type":"thinking","thinking":[{"text":"t"}]}],"refusal":"@"}', t)
            for t in ("a", "b")
        ],
    ],
    ids=[
        *("plain-tail", "usage", "content-twice", "escaped-key", "more-than-content", "no-index"),
        *("reasoning", "empty-beside", "empty-hole", "two-texts", "audio", "tool-call", "content-array"),
    ],
)
def test_what_a_shape_must_not_be_learned_from(chunks: list[str]) -> None:
    both([item(ROLE), *(item(c) for c in chunks)])


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    texts=st.lists(st.text(max_size=8), min_size=1, max_size=6),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.text(max_size=3), st.integers(0, 3)), max_size=4),
    ascii_only=st.booleans(),
    obfuscation=st.none() | st.text(max_size=6),
    field=st.sampled_from(["content", "reasoning_content", "reasoning", "refusal"]),
)
def test_near_misses_mean_what_parsing_them_means(
    texts: list[str],
    edits: list[tuple[int, str, int]],
    ascii_only: bool,
    obfuscation: str | None,
    field: str,
) -> None:
    if obfuscation is None:
        tail = PLAIN_TAIL
    else:
        tail = TAIL.replace('"abc"', json.dumps(obfuscation, ensure_ascii=ascii_only))
    chunks = [HEAD + f'{{"{field}":' + json.dumps(t, ensure_ascii=ascii_only) + "}" + tail for t in texts]
    # then the same chunks, each edited at one place: a character or a few replaced, inserted or deleted
    for k, (at, text, remove) in enumerate(edits):
        base = chunks[k % len(chunks)]
        at %= len(base) + 1
        chunks.append(base[:at] + text + base[at + remove :])
    both([item(ROLE), item(content_chunk("Hello", tail, field)), *(item(c) for c in chunks)])


# Pieces of a JSON string's characters, valid and not: escapes, a surrogate pair and a lone half, broken
# escapes, raw quotes and control characters, and the text that follows the string in a chunk.
FRAGMENTS = [
    "a",
    " ",
    "é",
    "😀",
    "\\n",
    "\\t",
    '\\"',
    "\\\\",
    "\\/",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\ud800",
    "\\udc00",
    "\\q",
    "\\u12",
    "\\",
    '"',
    "\x01",
    "\x7f",
    "\u2028",
    '"}',
    '"},"logprobs":null',
    TAIL,
    PLAIN_TAIL,
    ",",
]


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    pieces=st.lists(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8), min_size=1, max_size=5),
    obfuscated=st.booleans(),
)
def test_escaped_text_and_its_near_misses_mean_what_parsing_them_means(
    pieces: list[list[str]], obfuscated: bool
) -> None:
    """The text between a learned shape's prefix and suffix spliced from escape fragments, well-formed or
    not: the shape reads it exactly when parsing would read the same, or leaves it to parsing."""
    tail = TAIL if obfuscated else PLAIN_TAIL
    chunks = [HEAD + '{"content":"' + "".join(p) + '"}' + tail for p in pieces]
    both([item(ROLE), item(content_chunk("Hello", tail)), *(item(c) for c in chunks)])
