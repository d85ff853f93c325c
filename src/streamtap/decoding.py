"""Incremental content decoding (the first tap stage): a copy of a compressed body, decoded as it arrives.

The client always gets the bytes the upstream sent; only the tap's copy is decoded. Mirrors the shape of
httpx's `_decoders.py`: `feed(bytes) -> bytes` and `flush() -> bytes`.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

import brotli
import zstandard

from .errors import StreamtapError


class ContentDecodingError(StreamtapError):
    """The body does not decode with the encoding its headers announce."""


def _failed(error: Exception) -> ContentDecodingError:
    """`error`, the codec's own, as a ContentDecodingError caused by it. (`raise ... from error` would say
    the same, but compiled by mypyc it loses the cause: streamtap.native.)"""
    failure = ContentDecodingError(str(error))
    failure.__cause__ = error
    return failure


class Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class IdentityDecoder:
    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class ZlibDecoder:
    """gzip (RFC 1952, any number of members) and deflate (an RFC 1950 zlib stream, or raw RFC 1951)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._head = b""  # deflate: the first bytes, until the zlib header can be recognised
        self._obj: Any = zlib.decompressobj(zlib.MAX_WBITS | 16) if gzip else None

    @staticmethod
    def _is_zlib_header(head: bytes) -> bool:
        # RFC 1950 2.2: CM = 8 (deflate) in the low nibble of CMF, and CMF*256 + FLG is a multiple of 31
        return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:
            # "deflate" is often sent raw, without the zlib header: tell them apart on the first two bytes
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            wbits = zlib.MAX_WBITS if self._is_zlib_header(data) else -zlib.MAX_WBITS
            self._obj = zlib.decompressobj(wbits)
        try:
            out = self._obj.decompress(data)
            # gzip bodies may hold several members back to back (RFC 1952 2.2)
            while self._gzip and self._obj.eof and self._obj.unused_data:
                rest = self._obj.unused_data
                self._obj = zlib.decompressobj(zlib.MAX_WBITS | 16)
                out += self._obj.decompress(rest)
            return bytes(out)
        except zlib.error as e:
            raise _failed(e) from e

    def flush(self) -> bytes:
        if self._obj is None:
            if not self._head:
                return b""
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            data, self._head = self._head, b""
            return self.feed(data) + self.flush()
        try:
            return bytes(self._obj.flush())
        except zlib.error as e:
            raise _failed(e) from e


class BrotliDecoder:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        try:
            return bytes(self._obj.process(data))
        except brotli.error as e:
            raise _failed(e) from e

    def flush(self) -> bytes:
        return b""


class ZstdDecoder:
    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def feed(self, data: bytes) -> bytes:
        try:
            return bytes(self._obj.decompress(data))
        except zstandard.ZstdError as e:
            raise _failed(e) from e

    def flush(self) -> bytes:
        return b""


class ChainDecoder:
    """`Content-Encoding: a, b` was applied a then b, so it is undone b then a."""

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def feed(self, data: bytes) -> bytes:
        for d in self._decoders:
            data = d.feed(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for d in self._decoders:
            data = d.feed(data) + d.flush() if data else d.flush()
        return data


def make_decoder(content_encoding: str | None) -> Decoder:
    """A decoder for a Content-Encoding header value; unknown codings raise ContentDecodingError."""
    tokens = [c.strip() for c in (content_encoding or "").split(",") if c.strip()]
    decoders: list[Decoder] = []
    for token in reversed(tokens):
        coding = token.lower()
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            decoders.append(ZlibDecoder(gzip=True))
        elif coding == "deflate":
            decoders.append(ZlibDecoder(gzip=False))
        elif coding == "br":
            decoders.append(BrotliDecoder())
        elif coding == "zstd":
            decoders.append(ZstdDecoder())
        else:
            raise ContentDecodingError(f"unsupported content-encoding {token!r}")
    if not decoders:
        return IdentityDecoder()
    if len(decoders) == 1:
        return decoders[0]
    return ChainDecoder(decoders)
