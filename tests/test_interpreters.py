"""Picking the provider semantics for an exchange: by request path, the first event only as a tiebreak."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtap.anthropic_api import AnthropicInterpreter
from streamtap.chat import ChatInterpreter
from streamtap.interpreters import Interpreter, api_name, interpreter_for
from streamtap.responses_api import ResponsesInterpreter
from streamtap.sse import ItemKind, SSEItem, decode_all

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "openai.chat"),
        ("/v1/completions", "openai.chat"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", "openai.chat"),
        ("/openai/deployments/responses/chat/completions", "openai.chat"),  # a deployment named "responses"
        ("/v1/threads/thread_1/runs", "openai.chat"),
        ("/v1/threads/thread_1/messages", "openai.chat"),  # Assistants, not Anthropic
        ("/v1/responses", "openai.responses"),
        ("/v1/responses/", "openai.responses"),
        ("/openai/v1/responses?api-version=preview", "openai.responses"),
        ("/api/v1/responses", "openai.responses"),  # OpenRouter
        ("/v1/responses/resp_123?stream=true&starting_after=7", "openai.responses"),
        ("/v1/messages", "anthropic.messages"),
        ("/v1/messages?beta=true", "anthropic.messages"),
        ("/v1/messages/count_tokens", "anthropic.messages"),
        ("/v1/complete", "anthropic.messages"),
        (
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-3-7-sonnet:streamRawPredict",
            "anthropic.messages",
        ),
        ("/v1/models", "openai.chat"),
        ("", "openai.chat"),
    ],
)
def test_api_by_path(path: str, api: str) -> None:
    assert api_name(path) == api
    expected = {
        "openai.chat": ChatInterpreter,
        "openai.responses": ResponsesInterpreter,
        "anthropic.messages": AnthropicInterpreter,
    }[api]
    assert type(interpreter_for(path)) is expected


def first_event(name: str) -> SSEItem:
    return next(i for i in decode_all((CORPUS / name).read_bytes()) if i.kind is ItemKind.EVENT)


@pytest.mark.parametrize(
    ("name", "api"),
    [
        ("anthropic_messages_thinking_signature.sse", "anthropic.messages"),
        ("anthropic_legacy_complete_crlf_padded_json.sse", "anthropic.messages"),
        ("openai_responses_text.sse", "openai.responses"),
        ("openrouter_responses_api_no_event_lines.sse", "openai.responses"),  # type only inside the JSON
        ("openai_chat_text_include_usage.sse", "openai.chat"),
        ("openai_assistants_run_stream_event_done.sse", "openai.chat"),
    ],
)
def test_first_event_settles_an_unknown_path(name: str, api: str) -> None:
    assert api_name("/gateway/llm", first_event(name)) == api


def test_path_wins_over_the_first_event() -> None:
    event = first_event("anthropic_messages_thinking_signature.sse")
    assert api_name("/v1/chat/completions", event) == "openai.chat"
    assert type(interpreter_for("/v1/responses", event)) is ResponsesInterpreter


@pytest.mark.parametrize("data", ["", "[DONE]", "{", "[]", '{"type": 3}'])
def test_odd_first_events_fall_back_to_chat(data: str) -> None:
    assert api_name("/x", SSEItem(ItemKind.EVENT, b"", data)) == "openai.chat"
    assert api_name("/x", SSEItem(ItemKind.COMMENT, b"", data)) == "openai.chat"


def test_every_interpreter_reads_the_same_way() -> None:
    interpreters: list[Interpreter] = [ChatInterpreter(), ResponsesInterpreter(), AnthropicInterpreter()]
    for interp in interpreters:
        assert (interp.model, interp.usage, interp.error, interp.saw_done, interp.saw_finish) == (
            None,
            None,
            None,
            False,
            False,
        )
        assert interp.choices() == ()
        assert interp.feed(SSEItem(ItemKind.COMMENT, b": hi\n", "hi")).kind == "comment"
