"""The SSE decoder against the WHATWG rules, one by one, and against every recorded stream in the corpus.

Spec: HTML Living Standard, 9.2.5 "Parsing an event stream" and 9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from streamtap.sse import ItemKind, SSEDecoder, SSEItem, decode_all

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SSE_FILES = sorted(CORPUS.glob("*.sse"))
SMALL = 1_500  # up to this size: every offset, literally, as two reads of the whole body
BIG = 20_000  # above this size: random offsets only


def decode(*reads: bytes) -> list[SSEItem]:
    decoder = SSEDecoder()
    items: list[SSEItem] = []
    for read in reads:
        items += decoder.feed(read)
    return items + decoder.flush()


def events(items: list[SSEItem]) -> list[SSEItem]:
    return [item for item in items if item.kind is ItemKind.EVENT]


def datas(*reads: bytes) -> list[str]:
    return [item.data for item in events(decode(*reads))]


def test_corpus_is_there() -> None:
    assert len(SSE_FILES) >= 60


# -- line ends --------


class TestLineEnds:
    # 9.2.5: "a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A LINE FEED
    # (LF) character not preceded by a U+000D CARRIAGE RETURN (CR) character, and a single U+000D CARRIAGE
    # RETURN (CR) character not followed by a U+000A LINE FEED (LF) character being the ways in which a line
    # can end."

    @pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
    def test_each_line_end(self, eol: bytes) -> None:
        body = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
        items = decode(body)
        assert [i.data for i in events(items)] == ["a\nb", "c"]
        assert [i.raw for i in items] == [b"data: a" + eol + b"data: b" + eol + eol, b"data: c" + eol + eol]

    def test_mixed_line_ends(self) -> None:
        # CRLF, CR, LF, then "\r\n" as the blank line: one event with three data lines
        assert datas(b"data: a\r\ndata: b\rdata: c\n\r\n") == ["a\nb\nc"]

    def test_lf_then_cr_is_two_line_ends(self) -> None:
        # "\n\r" is LF (end of the data line) then CR (a blank line): the event is dispatched
        assert datas(b"data: a\n\rdata: b\n\n") == ["a", "b"]

    def test_cr_and_lf_split_across_reads_is_one_line_end(self) -> None:
        # The CR at the end of one read and the LF at the start of the next are one CRLF pair: treating them
        # as two line ends would make the LF a blank line and dispatch "a" alone.
        items = decode(b"data: a\r", b"\ndata: b\r\n\r\n")
        assert [i.data for i in events(items)] == ["a\nb"]
        assert items == decode(b"data: a\r\ndata: b\r\n\r\n")

    def test_blank_line_cr_and_lf_split_across_reads(self) -> None:
        items = decode(b"data: a\r\n\r", b"\n")
        assert items == [SSEItem(ItemKind.EVENT, b"data: a\r\n\r\n", "a")]  # no PADDING for the LF

    def test_cr_lf_each_in_its_own_read(self) -> None:
        assert decode(b"data: a", b"\r", b"\n", b"\r", b"\n") == decode(b"data: a\r\n\r\n")

    def test_trailing_cr_at_end_of_stream_ends_the_line(self) -> None:
        # 9.2.5: a CR not followed by LF is a line end, also the last byte of the stream
        items = decode(b"data: a\r\r")
        assert events(items) == [SSEItem(ItemKind.EVENT, b"data: a\r\r", "a")]

    def test_event_dispatched_when_its_blank_line_arrives(self) -> None:
        decoder = SSEDecoder()
        assert decoder.feed(b"data: a\n") == []
        assert [i.data for i in decoder.feed(b"\n")] == ["a"]
        assert decoder.flush() == []


# -- fields --------


class TestData:
    def test_multi_line_data_joined_with_lf(self) -> None:
        # 9.2.6 "data": "Append the field value to the data buffer, then append a single U+000A LINE FEED (LF)
        # character"; dispatch step 3 removes only the last LF.
        assert datas(b"data: a\ndata:\ndata: b\n\n") == ["a\n\nb"]

    def test_empty_data_is_dispatched_with_empty_data(self) -> None:
        # the data buffer is "\n", not empty, so the event is dispatched (with data "")
        assert datas(b"data:\n\n") == [""]
        assert datas(b"data: \n\n") == [""]

    def test_field_without_colon_has_empty_value(self) -> None:
        # 9.2.6: "the string is not empty but does not contain a U+003A COLON character" -> "using the whole
        # line as the field name, and the empty string as the field value"
        assert datas(b"data\n\n") == [""]
        assert datas(b"data\ndata\n\n") == ["\n"]

    @pytest.mark.parametrize(
        ("line", "value"),
        [
            (b"data:x", "x"),  # no space (Hugging Face TGI)
            (b"data: x", "x"),
            (b"data:  x", " x"),  # "If value starts with a U+0020 SPACE character, remove it": only one
            (b"data:\tx", "\tx"),  # only a SPACE is removed
            (b"data: x ", "x "),  # trailing spaces are kept
            (b"data: a: b", "a: b"),  # the field ends at the FIRST colon
        ],
    )
    def test_one_leading_space_removed(self, line: bytes, value: str) -> None:
        assert datas(line + b"\n\n") == [value]

    def test_field_names_are_case_sensitive_and_exact(self) -> None:
        # 9.2.6 "Otherwise: The field is ignored."
        assert datas(b"Data: x\n\ndata : y\n\n data: z\n\n") == []

    def test_unknown_fields_ignored(self) -> None:
        items = events(decode(b"foo: bar\ndata: a\nbaz\n\n"))
        assert [(i.data, i.event, i.id, i.retry) for i in items] == [("a", None, None, None)]

    def test_several_events_in_one_read(self) -> None:
        decoder = SSEDecoder()
        items = decoder.feed(b"data: 1\n\ndata: 2\n\nevent: x\ndata: 3\n\n")
        assert [(i.data, i.event) for i in items] == [("1", None), ("2", None), ("3", "x")]
        assert decoder.flush() == []


class TestEventField:
    def test_event_type(self) -> None:
        # 9.2.6 "event": "Set the event type buffer to field value."
        items = events(decode(b"event: ping\ndata: 1\n\ndata: 2\n\n"))
        assert [(i.event, i.data) for i in items] == [("ping", "1"), (None, "2")]  # reset after dispatch

    def test_empty_event_type_is_the_default(self) -> None:
        # dispatch: the type changes only "If the event type buffer has a value other than the empty string"
        assert [i.event for i in events(decode(b"event:\ndata: 1\n\n"))] == [None]

    def test_event_without_data_is_not_dispatched(self) -> None:
        # dispatch step 2: "If the data buffer is an empty string, set the data buffer and the event type
        # buffer to the empty string and return."
        items = decode(b"event: ping\n\n")
        assert events(items) == []
        assert b"".join(i.raw for i in items) == b"event: ping\n\n"

    def test_undispatched_event_type_does_not_leak_into_the_next_event(self) -> None:
        assert [i.event for i in events(decode(b"event: ping\n\ndata: x\n\n"))] == [None]

    def test_last_event_type_wins(self) -> None:
        assert [i.event for i in events(decode(b"event: a\nevent: b\ndata: x\n\n"))] == ["b"]


class TestIdField:
    def test_id_persists_across_events(self) -> None:
        # dispatch step 1: "The buffer does not get reset, so the last event ID string of the event source
        # remains set to this value until the next time it is set by the server."
        items = events(decode(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"))
        assert [(i.data, i.id) for i in items] == [("a", "7"), ("b", "7"), ("c", "8")]

    def test_id_with_nul_is_ignored(self) -> None:
        # 9.2.6 "id": "If the field value does not contain U+0000 NULL, then set the last event ID buffer to
        # the field value. Otherwise, ignore the field."
        items = events(decode(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"))
        assert [i.id for i in items] == ["1", "1"]

    def test_empty_id_resets(self) -> None:
        items = events(decode(b"id: 1\ndata: a\n\nid\ndata: b\n\n"))
        assert [i.id for i in items] == ["1", ""]

    def test_id_set_by_an_undispatched_event_persists(self) -> None:
        assert [i.id for i in events(decode(b"id: 5\n\ndata: a\n\n"))] == ["5"]

    def test_no_id_is_none(self) -> None:
        assert [i.id for i in events(decode(b"data: a\n\n"))] == [None]


class TestRetryField:
    # 9.2.6 "retry": "If the field value consists of only ASCII digits, then interpret the field value as an
    # integer in base ten ... Otherwise, ignore the field."

    def test_digits(self) -> None:
        assert [i.retry for i in events(decode(b"retry: 3000\ndata: a\n\ndata: b\n\n"))] == [3000, None]

    @pytest.mark.parametrize(
        "value",
        [b"", b"3s", b"-1", b"+1", b"1.5", b"  10", b"1 000", "３".encode(), "²".encode(), "١".encode()],
        ids=repr,
    )
    def test_anything_else_is_ignored(self, value: bytes) -> None:
        items = events(decode(b"retry: 10\ndata: a\n\nretry:" + value + b"\ndata: b\n\n"))
        assert [i.retry for i in items] == [10, None]

    @pytest.mark.parametrize(
        ("value", "retry"),
        [
            (b"9" * 18, int("9" * 18)),
            (b"0" * 5000 + b"25", 25),  # leading zeros: still 25
            (b"1" + b"0" * 18, None),  # past any client's 64-bit integer
            (b"7" * 5000, None),  # past what int() reads at once: was a ValueError, the rest of the body lost
        ],
        ids=["18 digits", "zeros", "19 digits", "5000 digits"],
    )
    def test_a_huge_value(self, value: bytes, retry: int | None) -> None:
        items = events(decode(b"retry:" + value + b"\ndata: a\n\ndata: b\n\n"))
        assert [(i.data, i.retry) for i in items] == [("a", retry), ("b", None)]


class TestComments:
    # 9.2.6: "If the line starts with a U+003A COLON character (:) -> Ignore the line." The decoder still
    # returns it (as a COMMENT item) so that its bytes are recorded.

    @pytest.mark.parametrize(
        ("line", "text"),
        [
            (b": OPENROUTER PROCESSING", "OPENROUTER PROCESSING"),
            (b":hi", "hi"),
            (b":", ""),
            (b"::x", ":x"),
            (b":408: 408 Request Timeout", "408: 408 Request Timeout"),
        ],
    )
    def test_comment_items(self, line: bytes, text: str) -> None:
        items = decode(line + b"\n")
        assert items == [SSEItem(ItemKind.COMMENT, line + b"\n", text)]

    def test_comment_inside_an_event_does_not_change_it(self) -> None:
        items = decode(b"data: a\n: keep-alive\ndata: b\n\n")
        assert [i.kind for i in items] == [ItemKind.COMMENT, ItemKind.EVENT]
        assert items[1].data == "a\nb"

    def test_comments_do_not_dispatch(self) -> None:
        assert datas(b"data: a\n:\n: x\n") == []

    def test_comment_inside_an_event_leaves_the_event_bytes_whole(self) -> None:
        # the event's raw is one contiguous range holding all its lines; the comment keeps no bytes of its own
        body = b"data: a\n: keep-alive\ndata: b\n\n"
        items = decode(body)
        assert items == [SSEItem(ItemKind.COMMENT, b"", "keep-alive"), SSEItem(ItemKind.EVENT, body, "a\nb")]
        assert [i.data for i in events(decode_all(items[1].raw))] == ["a\nb"]

    def test_comment_between_events_keeps_its_bytes(self) -> None:
        items = decode(b"data: a\n\n: hi\n\ndata: b\n\n")
        assert [(i.kind, i.raw) for i in items] == [
            (ItemKind.EVENT, b"data: a\n\n"),
            (ItemKind.COMMENT, b": hi\n"),
            (ItemKind.EVENT, b"\ndata: b\n\n"),
        ]

    def test_comment_after_an_undispatched_field(self) -> None:
        # `event:` alone never dispatches; its bytes and the comment's stay together in the stream's order
        body = b"event: x\n: c\n\ndata: y\n\n"
        items = decode(body)
        assert b"".join(i.raw for i in items) == body
        assert [i.data for i in events(items)] == ["y"] and events(items)[0].event is None


# -- bytes and text --------


class TestEncoding:
    # 9.2.5: "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."

    BOM = b"\xef\xbb\xbf"

    @pytest.mark.parametrize("cut", [0, 1, 2, 3, 4])
    def test_leading_bom_stripped_also_split_across_reads(self, cut: int) -> None:
        body = self.BOM + b"data: x\n\n"
        items = decode(body[:cut], body[cut:])
        assert items == [SSEItem(ItemKind.EVENT, body, "x")]  # stripped from the data, kept in the raw

    def test_bom_one_byte_per_read(self) -> None:
        assert decode(b"\xef", b"\xbb", b"\xbf", b"data: x\n\n") == decode(self.BOM + b"data: x\n\n")

    def test_only_one_bom_stripped(self) -> None:
        # the second U+FEFF is part of the field name "\ufeffdata", which is ignored
        assert datas(self.BOM + self.BOM + b"data: x\n\n") == []

    def test_bom_not_at_start_is_not_stripped(self) -> None:
        assert datas(b"data: a\n\n" + self.BOM + b"data: b\n\n") == ["a"]

    def test_bom_prefix_then_other_bytes(self) -> None:
        # b"\xef\xbb" could start a BOM; when it does not, the bytes are kept and decoded (as U+FFFD)
        items = decode(b"\xef\xbb", b"data: x\n\n")
        assert b"".join(i.raw for i in items) == b"\xef\xbbdata: x\n\n"
        assert events(items) == []  # the field name is "\ufffddata"

    @pytest.mark.parametrize("char", ["é", "€", "😀"])
    def test_utf8_character_split_across_reads(self, char: str) -> None:
        # 9.2.5: "Streams must be decoded using the UTF-8 decode algorithm": per stream, not per read
        body = f"data: caf{char}\n\n".encode()
        start = len(b"data: caf")
        for cut in range(start, start + len(char.encode()) + 1):
            assert datas(body[:cut], body[cut:]) == [f"caf{char}"], cut

    @pytest.mark.parametrize(
        ("raw", "text"),
        [
            (b"a\xffb", "a\ufffdb"),
            (b"\xe2\x82", "\ufffd"),  # a truncated sequence is one U+FFFD
            (b"\xc3\x28", "\ufffd("),
            (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # an encoded surrogate is not UTF-8
        ],
    )
    def test_invalid_utf8_becomes_replacement_character(self, raw: bytes, text: str) -> None:
        body = b"data: " + raw + b"\n\n"
        items = decode(body)
        assert [i.data for i in events(items)] == [text]
        assert items[0].raw == body

    def test_nul_in_data_is_kept(self) -> None:
        assert datas(b"data: a\x00b\n\n") == ["a\x00b"]


# -- end of stream --------


class TestEndOfStream:
    # 9.2.6: "Once the end of the file is reached, any pending data must be discarded. (If the file ends in
    # the middle of an event, before the final empty line, the incomplete event is not dispatched.)"

    @pytest.mark.parametrize(
        "body",
        [
            b"data: a",
            b"data: a\n",
            b"data: a\r\n",
            b"event: x\ndata: a\n",
            b"data: a\n\ndata: b\n",
            b"id: 1\n",
        ],
    )
    def test_unterminated_event_is_incomplete(self, body: bytes) -> None:
        decoder = SSEDecoder()
        fed = decoder.feed(body)
        flushed = decoder.flush()
        items = fed + flushed
        assert b"".join(i.raw for i in items) == body
        assert flushed and flushed[-1].kind is ItemKind.INCOMPLETE
        assert "b" not in [i.data for i in events(items)] and all(
            i.kind is not ItemKind.EVENT for i in flushed
        )

    def test_incomplete_item_holds_the_pending_text(self) -> None:
        items = decode(b"data: a\n\ndata: partial")
        assert items[-1] == SSEItem(ItemKind.INCOMPLETE, b"data: partial", "data: partial")

    @pytest.mark.parametrize("tail", [b"\n", b"\n\n", b"\r\n", b"\r\n\r\n", b"\r"])
    def test_trailing_blank_lines_are_padding(self, tail: bytes) -> None:
        items = decode(b"data: a\n\n" + tail)
        assert items == [SSEItem(ItemKind.EVENT, b"data: a\n\n", "a"), SSEItem(ItemKind.PADDING, tail)]

    def test_blank_lines_alone_are_padding(self) -> None:
        assert decode(b"\n\n") == [SSEItem(ItemKind.PADDING, b"\n\n")]

    def test_empty_stream(self) -> None:
        assert decode() == [] and decode(b"", b"") == []

    def test_blank_lines_between_events_go_with_the_next_event(self) -> None:
        items = decode(b"data: a\n\n\n\ndata: b\n\n")
        assert [i.raw for i in items] == [b"data: a\n\n", b"\n\ndata: b\n\n"]


# -- the corpus --------


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.parametrize("path", SSE_FILES, ids=_ids(SSE_FILES))
def test_corpus_raw_round_trip(path: Path) -> None:
    body = path.read_bytes()
    items = decode_all(body)
    assert b"".join(item.raw for item in items) == body
    assert events(items), "every recording holds at least one event"
    # items other than the last one are whole events or comments
    assert all(i.kind in (ItemKind.EVENT, ItemKind.COMMENT) for i in items[:-1])


def _boundaries(items: list[SSEItem]) -> list[int]:
    offsets = [0]
    for item in items:
        offsets.append(offsets[-1] + len(item.raw))
    return offsets


def _two_reads(first: bytes, second: bytes) -> list[SSEItem]:
    decoder = SSEDecoder()
    return decoder.feed(first) + decoder.feed(second) + decoder.flush()


@pytest.mark.parametrize("path", [p for p in SSE_FILES if p.stat().st_size <= BIG], ids=lambda p: p.name)
def test_corpus_split_at_every_offset(path: Path) -> None:
    """Two reads instead of one never change the items, wherever the cut falls."""
    body = path.read_bytes()
    whole = decode(body)
    if len(body) <= SMALL:
        for cut in range(len(body) + 1):
            assert _two_reads(body[:cut], body[cut:]) == whole, cut
        return
    # Every offset, cut inside the item that holds it, decoded on its own: an item starts where the decoder
    # holds no state but the last event ID (only the Replicate recording has ids, and it is small enough for
    # the literal test above). A full decode per offset would take minutes;
    # test_corpus_split_at_random_offsets cuts whole bodies.
    bounds = _boundaries(whole)
    for i, item in enumerate(whole):
        window = body[bounds[i] : bounds[i + 1]]
        assert window == item.raw
        one = decode(window)
        if item.kind is ItemKind.EVENT:
            assert events(one) == [item]
        for cut in range(1, len(window)):
            assert _two_reads(window[:cut], window[cut:]) == one, bounds[i] + cut


@pytest.mark.parametrize("path", [p for p in SSE_FILES if p.stat().st_size > SMALL], ids=lambda p: p.name)
def test_corpus_split_at_random_offsets(path: Path) -> None:
    body = path.read_bytes()
    whole = decode(body)
    rng = random.Random(path.name)
    for cut in rng.sample(range(len(body) + 1), 200 if len(body) > BIG else 30):
        assert _two_reads(body[:cut], body[cut:]) == whole, cut
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(2, 60)))
        reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert decode(*reads) == whole, cuts


@pytest.mark.parametrize("path", [p for p in SSE_FILES if p.stat().st_size <= BIG], ids=lambda p: p.name)
def test_corpus_one_byte_reads(path: Path) -> None:
    body = path.read_bytes()
    assert decode(*(body[i : i + 1] for i in range(len(body)))) == decode(body)


class TestCorpusSpecifics:
    """What SOURCES.md says is special about a recording, seen through the decoder."""

    def _items(self, name: str) -> list[SSEItem]:
        return decode_all((CORPUS / name).read_bytes())

    def test_replicate_multiline_data_ids_and_comments(self) -> None:
        items = self._items("replicate_llama_multiline_data_id_comments.sse")
        assert items[0] == SSEItem(ItemKind.COMMENT, b": hi\n", "hi")
        assert items[-2].kind is ItemKind.COMMENT and items[-2].data == "408: 408 Request Timeout"
        assert items[-1] == SSEItem(ItemKind.PADDING, b"\n")
        evs = events(items)
        assert any("\n" in e.data for e in evs)  # consecutive data: lines
        assert "" in [e.data for e in evs]  # empty `data: ` fields
        assert all(e.id for e in evs) and evs[-1].event == "done"

    @pytest.mark.parametrize(
        "name",
        [
            "gemini_thinking_crlf.sse",
            "gemini_streamGenerateContent_alt_sse_crlf.sse",
            "anthropic_legacy_complete_crlf_padded_json.sse",
        ],
    )
    def test_crlf_streams_have_no_cr_in_data(self, name: str) -> None:
        evs = events(self._items(name))
        assert evs and all("\r" not in e.data and e.data.startswith("{") for e in evs)

    def test_tgi_data_without_space(self) -> None:
        evs = events(self._items("huggingface_tgi_chat_nospace_text_completion_logprobs.sse"))
        assert len(evs) == 100 and all(e.data.startswith("{") for e in evs)

    def test_avian_extra_blank_line_goes_with_the_next_event(self) -> None:
        items = self._items("avian_kimi_k25_spaced_json_id_switch.sse")
        assert items[1].raw.startswith(b"\ndata: ")

    @pytest.mark.parametrize(
        "name",
        [
            "azure_ai_inference_phi3_vllm_usage_every_chunk.sse",
            "azure_openai_async_filter_content_filter_offsets.sse",
        ],
    )
    def test_done_without_newline_is_incomplete(self, name: str) -> None:
        items = self._items(name)
        assert items[-1] == SSEItem(ItemKind.INCOMPLETE, b"data: [DONE]", "data: [DONE]")

    def test_done_with_single_lf_is_incomplete(self) -> None:
        items = self._items("anthropic_openai_compat_tool_index_starts_at_1.sse")
        assert items[-1].kind is ItemKind.INCOMPLETE and items[-1].raw == b"data: [DONE]\n"

    def test_assistants_done_event_name(self) -> None:
        last = events(self._items("openai_assistants_run_stream_event_done.sse"))[-1]
        assert (last.event, last.data) == ("done", "[DONE]")


@pytest.mark.parametrize("path", SSE_FILES, ids=_ids(SSE_FILES))
def test_corpus_one_read_per_item(path: Path) -> None:
    """Each item in a read of its own (how most chunks arrive; one `data:` line takes the decoder's fast
    path) gives the items one read of the whole body gives."""
    body = path.read_bytes()
    whole = decode(body)
    assert decode(*(item.raw for item in whole)) == whole


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([b"data:x\n\n"], [("x", None)]),  # no space after the colon
        ([b"data:  x\n\n"], [(" x", None)]),  # only one space is removed
        ([b"data:\n\n"], [("", None)]),  # an empty data line still dispatches
        ([b"id: 7\n\n", b"data: x\n\n"], [("x", "7")]),  # the last event ID carries over
        ([b"event: e\n", b"data: x\n\n"], [("x", None)]),  # a pending field: the general path
        ([b"\xef\xbb\xbfdata: x\n\n", b"data: y\n\n"], [("x", None), ("y", None)]),
        ([b"data: a\xffb\n\n"], [("a\ufffdb", None)]),  # invalid UTF-8 replaced, as for any line
    ],
)
def test_one_data_line_reads(reads: list[bytes], expected: list[tuple[str, str | None]]) -> None:
    items = events(decode(*reads))
    assert [(i.data, i.id) for i in items] == expected
    assert items == events(decode(b"".join(reads)))
    assert b"".join(i.raw for i in decode(*reads)) == b"".join(reads)


@pytest.mark.parametrize("path", SSE_FILES[:6], ids=lambda p: p.name)
def test_a_bytearray_reads_like_bytes_and_stays_as_it_was(path: Path) -> None:
    """Annotated `bytes | bytearray`; compiled code checks annotations, so a bytearray must work there."""
    body = path.read_bytes()
    copy = bytearray(body)
    assert decode_all(copy) == decode_all(body)
    reads = [bytearray(body[k : k + 37]) for k in range(0, len(body), 37)]
    assert decode(*reads) == decode(*(bytes(r) for r in reads))
    assert copy == body
