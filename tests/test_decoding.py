"""Incremental content decoding: every coding, fed in reads of any size, gives back the original body."""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Callable
from pathlib import Path

import brotli
import pytest
import zstandard

from streamtap.decoding import (
    ChainDecoder,
    ContentDecodingError,
    Decoder,
    IdentityDecoder,
    make_decoder,
)

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
BODY = (CORPUS / "openai_chat_n2_multiple_choices_interleaved.sse").read_bytes()


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _pieces(data: bytes, size: int = 300) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _gzip_flushed(data: bytes) -> bytes:
    """How a streaming server gzips: one member, a sync flush after every write."""
    c = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    return b"".join(c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH) for p in _pieces(data)) + c.flush()


def _zstd_flushed(data: bytes) -> bytes:
    c = zstandard.ZstdCompressor().compressobj()
    flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    return b"".join(c.compress(p) + c.flush(flush) for p in _pieces(data)) + c.flush()


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


CODINGS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "gzip-sync-flushed": ("gzip", _gzip_flushed),
    "x-gzip": ("x-gzip", gzip.compress),
    "deflate-zlib": ("deflate", _zlib),
    "deflate-raw": ("deflate", _raw_deflate),
    "br": ("br", brotli.compress),
    "zstd": ("zstd", _zstd),
    "zstd-flushed": ("zstd", _zstd_flushed),
    "gzip, br": ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
    "br, gzip": ("br,gzip", lambda d: gzip.compress(brotli.compress(d))),
    "deflate, zstd": ("deflate, zstd", lambda d: _zstd(_zlib(d))),
}


def feed_all(decoder: Decoder, reads: list[bytes]) -> bytes:
    return b"".join(decoder.feed(r) for r in reads) + decoder.flush()


def split(data: bytes, sizes: Callable[[], int]) -> list[bytes]:
    reads, i = [], 0
    while i < len(data):
        n = sizes()
        reads.append(data[i : i + n])
        i += n
    return reads


@pytest.mark.parametrize("name", CODINGS)
def test_whole_body(name: str) -> None:
    header, encode = CODINGS[name]
    assert feed_all(make_decoder(header), [encode(BODY)]) == BODY


@pytest.mark.parametrize("name", CODINGS)
def test_one_byte_reads(name: str) -> None:
    header, encode = CODINGS[name]
    assert feed_all(make_decoder(header), split(encode(BODY), lambda: 1)) == BODY


@pytest.mark.parametrize("name", CODINGS)
@pytest.mark.parametrize("seed", range(5))
def test_random_reads(name: str, seed: int) -> None:
    header, encode = CODINGS[name]
    rng = random.Random(seed)
    reads = split(encode(BODY), lambda: rng.choice([1, 2, 3, 7, 64, 500, 4096]))
    assert feed_all(make_decoder(header), reads) == BODY


@pytest.mark.parametrize("name", ["gzip-sync-flushed", "gzip, br", "br", "zstd-flushed"])
def test_output_is_incremental(name: str) -> None:
    """Decoded bytes come out as the compressed ones arrive, not all at flush()."""
    header, encode = CODINGS[name]
    data = encode(BODY)
    decoder = make_decoder(header)
    half = decoder.feed(data[: len(data) // 2])
    assert len(half) > 0 and BODY.startswith(half)
    assert half + decoder.feed(data[len(data) // 2 :]) + decoder.flush() == BODY


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "zlib"])
@pytest.mark.parametrize("payload", [b"", b"x", BODY[:1000]], ids=["empty", "one-byte", "1000-bytes"])
def test_deflate_told_apart_in_one_byte_reads(level: int, raw: bool, payload: bytes) -> None:
    """Raw deflate (no zlib header) is recognised even when the first read is a single byte."""
    c = zlib.compressobj(level, wbits=-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    data = c.compress(payload) + c.flush()
    assert feed_all(make_decoder("deflate"), split(data, lambda: 1)) == payload
    assert feed_all(make_decoder("deflate"), [data]) == payload


def test_gzip_with_several_members() -> None:
    # RFC 1952 2.2: "A gzip file consists of a series of "members" (compressed data sets)."
    data = gzip.compress(b"data: a\n\n") + gzip.compress(b"data: b\n\n") + gzip.compress(b"")
    assert feed_all(make_decoder("gzip"), [data]) == b"data: a\n\ndata: b\n\n"
    assert feed_all(make_decoder("gzip"), split(data, lambda: 1)) == b"data: a\n\ndata: b\n\n"


def test_zstd_with_several_frames() -> None:
    # RFC 8878 3.1: "Zstandard compressed data is made of one or more frames."
    data = _zstd(b"data: a\n\n") + _zstd(b"data: b\n\n")
    assert feed_all(make_decoder("zstd"), [data]) == b"data: a\n\ndata: b\n\n"
    assert feed_all(make_decoder("zstd"), split(data, lambda: 1)) == b"data: a\n\ndata: b\n\n"


class TestMakeDecoder:
    @pytest.mark.parametrize("header", [None, "", "identity", " Identity ", "identity, identity"])
    def test_identity(self, header: str | None) -> None:
        decoder = make_decoder(header)
        assert isinstance(decoder, IdentityDecoder)
        assert feed_all(decoder, [b"abc", b"", b"def"]) == b"abcdef"

    def test_case_and_spaces(self) -> None:
        assert feed_all(make_decoder(" GZip "), [gzip.compress(BODY)]) == BODY

    def test_chain_is_undone_in_reverse_order(self) -> None:
        decoder = make_decoder("gzip, br")
        assert isinstance(decoder, ChainDecoder)
        with pytest.raises(ContentDecodingError):
            # applied the other way round, it does not decode
            feed_all(make_decoder("gzip, br"), [gzip.compress(brotli.compress(BODY))])

    @pytest.mark.parametrize("header", ["compress", "sdch", "gzip, foo", "aes128gcm", "x-bzip2"])
    def test_unknown_coding_raises(self, header: str) -> None:
        with pytest.raises(ContentDecodingError, match="unsupported content-encoding"):
            make_decoder(header)

    def test_the_message_quotes_the_header_as_sent(self) -> None:
        # lowered, "ΑΣ" reads "ας" in Python and "ασ" compiled (final sigma): neither is what was sent
        with pytest.raises(ContentDecodingError, match="unsupported content-encoding 'ΑΣ'"):
            make_decoder("gzip, ΑΣ")


class TestCorruptData:
    GARBAGE = b"this body says it is compressed but it is not\n"

    @pytest.mark.parametrize("header", ["gzip", "deflate", "br", "zstd", "gzip, br"])
    def test_garbage_raises(self, header: str) -> None:
        decoder = make_decoder(header)
        with pytest.raises(ContentDecodingError) as info:
            feed_all(decoder, [self.GARBAGE])
        assert info.value.__cause__ is not None  # chained from the codec's own error

    def test_gzip_crc_mismatch_raises(self) -> None:
        data = bytearray(gzip.compress(BODY))
        data[-8] ^= 0xFF  # the CRC32 in the member trailer
        with pytest.raises(ContentDecodingError, match="incorrect data check"):
            feed_all(make_decoder("gzip"), [bytes(data)])

    def test_zstd_checksum_mismatch_raises(self) -> None:
        data = bytearray(_zstd(BODY))
        data[-1] ^= 0xFF
        with pytest.raises(ContentDecodingError):
            feed_all(make_decoder("zstd"), [bytes(data)])

    def test_corruption_after_good_data_raises_later(self) -> None:
        c = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
        first = c.compress(BODY[:300]) + c.flush(zlib.Z_SYNC_FLUSH)  # ends on a byte boundary
        decoder = make_decoder("gzip")
        assert decoder.feed(first) == BODY[:300]
        with pytest.raises(ContentDecodingError, match="invalid block type"):
            decoder.feed(b"\xff" * 8)  # BTYPE 11 is reserved (RFC 1951 3.2.3)
