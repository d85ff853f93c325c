"""Incremental content decoding (the first tap stage): a copy of a compressed body, decoded as it arrives.

The client always gets the bytes the upstream sent; only the tap's copy is decoded. Mirrors the shape of
httpx's `_decoders.py`: `feed(bytes) -> bytes` and `flush() -> bytes`.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import zstandard

from .errors import StreamtapError


class ContentDecodingError(StreamtapError):
    """The body does not decode with the encoding its headers announce."""


class Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class IdentityDecoder:
    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class ZlibDecoder:
    """gzip (RFC 1952) and deflate (RFC 1950 zlib stream, or raw RFC 1951 as some servers send)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._first = True
        self._obj = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zlib.error as e:
            if self._first and not self._gzip:
                # "deflate" is often sent raw, without the zlib header
                self._first = False
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data)
            raise ContentDecodingError(str(e)) from e
        finally:
            self._first = False

    def flush(self) -> bytes:
        try:
            return self._obj.flush()
        except zlib.error as e:
            raise ContentDecodingError(str(e)) from e


class BrotliDecoder:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        try:
            return bytes(self._obj.process(data))
        except brotli.error as e:
            raise ContentDecodingError(str(e)) from e

    def flush(self) -> bytes:
        return b""


class ZstdDecoder:
    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> bytes:
        try:
            return bytes(self._obj.decompress(data))
        except zstandard.ZstdError as e:
            raise ContentDecodingError(str(e)) from e

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
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    decoders: list[Decoder] = []
    for coding in reversed(codings):
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
            raise ContentDecodingError(f"unsupported content-encoding {coding!r}")
    if not decoders:
        return IdentityDecoder()
    if len(decoders) == 1:
        return decoders[0]
    return ChainDecoder(decoders)
