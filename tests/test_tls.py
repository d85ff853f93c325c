"""HTTPS, as every real provider speaks it: the proxy in reverse mode in front of an HTTPS upstream, and as an
explicit proxy (HTTPS_PROXY) that the client reaches through CONNECT and trusts by mitmproxy's CA. The
upstream is the simulated provider behind TLS with a certificate made here for 127.0.0.1; the client is the
openai SDK. What matters: the client's stream is intact, and the record is as complete as over plain HTTP."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import ProxyProcess, carries, find_record
from streamtap.mock_upstream import MockUpstream
from streamtap.records import Outcome, StreamRecord


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamtap test upstream")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream.pem", directory / "upstream.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def upstream_cert(workdir: Path) -> Path:
    cert, _ = _self_signed(workdir)
    return cert


@pytest.fixture(scope="module")
def upstream(workdir: Path, upstream_cert: Path) -> Iterator[MockUpstream]:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(upstream_cert, workdir / "upstream.key")
    mock = MockUpstream(profile="fast", seed=11, tls=tls)
    mock.start()
    yield mock
    mock.stop()


def _stream(client: openai.OpenAI, prompt: str) -> tuple[str, str, str | None, int]:
    """(completion id, text, finish reason, completion tokens) of one streamed chat completion."""
    stream = client.chat.completions.create(
        model="mock-fast",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": prompt}],
    )
    text, finish, tokens = "", None, -1
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return stream.response.headers["x-mock-completion-id"], text, finish, tokens


def _check(
    rec: StreamRecord, upstream: MockUpstream, cid: str, text: str, finish: str | None, tokens: int
) -> None:
    assert rec.outcome is Outcome.COMPLETED and rec.error is None and rec.tap_errors == 0
    assert rec.url.startswith(f"https://127.0.0.1:{upstream.port}/")
    assert rec.choices[0].content == text and text
    assert rec.finish_reason == finish == "stop"
    assert rec.usage is not None and rec.usage.completion_tokens == tokens
    sent = upstream.wait_finished(cid)
    assert sum(1 for e in rec.events if e.tokens) == sum(1 for _, _, token in sent.sends if token)
    assert rec.ttft_ms is not None and rec.ttft_ms > 0
    # every event's bytes, as the client's SDK parsed them: the tee passed them on unchanged
    assert b"".join(e.raw for e in rec.events).endswith(b"data: [DONE]\n\n")


# A second mitmproxy script that says, for each response, how streamtap's tee timed its chunks.
STAMP_CHECK = """
import logging
from mitmproxy import ctx

class StampCheck:
    def response(self, flow):
        tap = next(a for a in ctx.master.addons.chain if type(a).__name__ == "StreamtapAddon")
        stamped = flow.server_conn.id in tap._stamps
        logging.warning("stamp-check: %s %s", type(flow.response.stream).__name__, stamped)

addons = [StampCheck()]
"""


def test_reverse_mode_in_front_of_an_https_upstream(
    upstream: MockUpstream, upstream_cert: Path, workdir: Path
) -> None:
    db = f"sqlite:///{workdir / 'reverse.db'}"
    check = workdir / "stamp_check.py"
    check.write_text(STAMP_CHECK)
    extra = ["--set", f"ssl_verify_upstream_trusted_ca={upstream_cert}", "--set", f"scripts={check}"]
    with (
        ProxyProcess(db, workdir, upstream=upstream.url, extra=extra, metrics=False) as proxy,
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-tls", max_retries=0, timeout=30) as client,
    ):
        cid, text, finish, tokens = _stream(client, "over TLS, please")
        rec = find_record(db, carries(cid), timeout=15, what="the record of the HTTPS exchange")
        _check(rec, upstream, cid, text, finish, tokens)
        # mitmproxy does TLS itself over a plain socket: the kernel still stamps each read of the upstream
        assert "stamp-check: _StampedTee True" in proxy.output()


def test_explicit_proxy_with_mitmproxy_ca(upstream: MockUpstream, upstream_cert: Path, workdir: Path) -> None:
    """HTTPS_PROXY: the client tunnels with CONNECT and trusts the CA mitmproxy made in its confdir, as the
    README tells users to (SSL_CERT_FILE=~/.mitmproxy/mitmproxy-ca-cert.pem)."""
    db = f"sqlite:///{workdir / 'regular.db'}"
    confdir = workdir / "mitmproxy-conf"
    extra = ["--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_cert}"]
    with ProxyProcess(db, workdir, mode="regular", extra=extra, metrics=False) as proxy:
        ca = confdir / "mitmproxy-ca-cert.pem"
        assert ca.is_file()
        with (
            httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=ca), timeout=30) as http,
            openai.OpenAI(
                base_url=upstream.url + "/v1", api_key="sk-tls", max_retries=0, http_client=http
            ) as c,
        ):
            cid, text, finish, tokens = _stream(c, "through the tunnel")
        rec = find_record(db, carries(cid), timeout=15, what="the record of the tunneled exchange")
        _check(rec, upstream, cid, text, finish, tokens)
    # without the CA the client refuses the proxy's certificate: the interception is not silent
    with (
        ProxyProcess(db, workdir, mode="regular", extra=extra, metrics=False) as proxy,
        httpx.Client(proxy=proxy.url, timeout=30) as http,
        openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-tls", max_retries=0, http_client=http) as c,
        pytest.raises(openai.APIConnectionError),
    ):
        _stream(c, "untrusted")


def test_http2_client_through_the_explicit_proxy(
    upstream: MockUpstream, upstream_cert: Path, workdir: Path
) -> None:
    """curl speaking HTTP/2 to the proxy (mitmproxy speaks HTTP/1.1 to this upstream): the body the client
    reads over HTTP/2 is the record's bytes, event for event."""
    curl = shutil.which("curl")
    if curl is None or "HTTP2" not in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout:
        pytest.skip("needs curl with HTTP/2")
    db = f"sqlite:///{workdir / 'h2.db'}"
    confdir = workdir / "mitmproxy-conf-h2"
    extra = ["--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_cert}"]
    # the upstream speaks HTTP/1.1 only; connecting to it lazily lets mitmproxy offer the client HTTP/2
    extra += ["--set", "connection_strategy=lazy"]
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "over h2"}]}
    received, headers = workdir / "h2-body.bin", workdir / "h2-headers.txt"
    with ProxyProcess(db, workdir, mode="regular", extra=extra, metrics=False) as proxy:
        done = subprocess.run(
            [
                curl, "-sS", "--http2", "-x", proxy.url, "--cacert", str(confdir / "mitmproxy-ca-cert.pem"),
                "-H", "content-type: application/json", "-d", json.dumps(body),
                "-o", str(received), "-D", str(headers), "-w", "%{http_version}",
                upstream.url + "/v1/chat/completions",
            ],
            capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == "2"  # HTTP/2 between the client and the proxy
        cid = next(
            line.split(":", 1)[1].strip()
            for line in headers.read_text().splitlines()
            if line.lower().startswith("x-mock-completion-id:")
        )
        rec = find_record(db, carries(cid), timeout=15, what="the record of the HTTP/2 exchange")
    assert rec.outcome is Outcome.COMPLETED and rec.tap_errors == 0
    assert b"".join(e.raw for e in rec.events) == received.read_bytes()
    assert received.read_bytes().endswith(b"data: [DONE]\n\n") and rec.choices[0].content


def test_a_broken_tls_record_ends_that_connection_quietly(
    upstream: MockUpstream, upstream_cert: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends a record the server cannot decrypt loses its connection; nothing is logged as an
    unhandled error and the next client is served."""
    client_tls = ssl.create_default_context(cafile=upstream_cert)

    def health() -> bytes:
        raw = socket.create_connection(("127.0.0.1", upstream.port), timeout=10)
        conn = client_tls.wrap_socket(raw, server_hostname="127.0.0.1")
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: upstream\r\n\r\n")
        answer = conn.recv(65536)
        os.write(conn.fileno(), b"\x17\x03\x03\x00\x20" + b"x" * 32)  # application data it cannot decrypt
        with contextlib.suppress(OSError):
            assert conn.recv(65536) in (b"", None)  # the server hangs up
        conn.close()
        return answer

    with caplog.at_level(logging.DEBUG):
        assert health().startswith(b"HTTP/1.1 200")
        assert health().startswith(b"HTTP/1.1 200")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
