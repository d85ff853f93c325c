"""`semantics.loads`: json.loads's result (or exception) for every input, whichever parser does the work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamtap.semantics import loads
from streamtap.sse import ItemKind, decode_all

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def _same(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except (ValueError, RecursionError) as e:
        with pytest.raises(type(e)):
            loads(text)
        return
    got = loads(text)
    assert got == expected or (got != got and expected != expected)  # NaN
    assert json.dumps(got) == json.dumps(expected)  # int vs float would show here: 1 == 1.0


@pytest.mark.parametrize(
    "text",
    [
        '{"usage": {"prompt_tokens": 12345678901234567890123}}',  # beyond 64 bits: an int, not a float
        '{"n": 18446744073709551616}',
        '{"n": -9223372036854775809}',
        '{"n": 18446744073709551615}',
        '{"n": 1.0000000000000002, "m": -0.0, "e": 1e-7, "E": 2.5E+10}',
        '{"n": NaN, "i": Infinity, "j": -Infinity}',  # json accepts these, orjson does not
        '{"big": 1e400}',  # json: inf
        '"\\ud800"',  # a lone surrogate escape
        '{"a": "\\u0000", "b": "\\ud83d\\ude00"}',
        '{"a": 1, "a": 2}',
        "[" * 5000 + "]" * 5000,  # json: RecursionError
        '{"a": 1',
        "",
        " [1] ",
        '{"é": "ü"}',
    ],
)
def test_like_json(text: str) -> None:
    _same(text)


@pytest.mark.parametrize("depth", [1024, 1025, 1100, 1494, 1495, 1496, 5000])
def test_nesting_beyond_1024_levels_is_refused_wherever_it_is_called_from(depth: int) -> None:
    """`json` alone would read ~1,500 levels, fewer the deeper its caller's stack (compiled code calls it
    from 3 levels deeper): one limit, orjson's, keeps the answer the same everywhere."""
    text = '{"error":' + '{"a":' * (depth - 1) + "1" + "}" * depth
    if depth <= 1024:
        assert loads(text)["error"]
    else:
        with pytest.raises(RecursionError):
            loads(text)


def test_every_corpus_event() -> None:
    n = 0
    for path in sorted(CORPUS.glob("*.sse")):
        for item in decode_all(path.read_bytes()):
            if item.kind is ItemKind.EVENT:
                _same(item.data)
                n += 1
    assert n > 1000
