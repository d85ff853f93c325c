"""`python -m bench.equivalence BASE_SRC NEW_SRC`: a patched tap must record exactly what the base did.

Each tree runs in its own subprocess (PYTHONPATH=SRC) and feeds every `.sse` file of the corpus through
`StreamTap`, split into network reads in many ways: whole, at every byte offset (two reads), one byte at a
time, and random cuts; with LF, CRLF and CR line ends. It prints one digest per (file, split) of the
`StreamRecord` it built (every field except the id and the wall-clock start); the two trees must agree
on all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .procs import REPO

CORPUS = REPO / "tests" / "fixtures" / "corpus"

_CHILD = r"""
import dataclasses, hashlib, json, random, sys
from datetime import UTC, datetime
from pathlib import Path
from streamtap.records import StreamStart
from streamtap.tap import StreamTap

def splits(body, rng):
    yield "whole", [body]
    if len(body) <= 6000:
        for i in range(1, len(body)):
            yield f"at{i}", [body[:i], body[i:]]
        yield "bytes", [body[i:i + 1] for i in range(len(body))]
    for seed in range(8):
        r = random.Random(seed)
        cuts = sorted(r.sample(range(1, len(body)), min(len(body) - 1, r.randint(1, 40))))
        yield f"rand{seed}", [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]

def record(reads, path):
    start = StreamStart(id="x", started_at=datetime(2026, 1, 1, tzinfo=UTC), method="POST",
        url="http://h" + path, host="h", path=path, request_model=None, api_key_fp=None, proxy_instance="b")
    tap = StreamTap(start, 0.0)
    tap.response_headers(0.5, 200, "text/event-stream", None)
    for i, chunk in enumerate(reads):
        tap.feed(chunk, 1.0 + i)
    tap.end_of_body(2.0 + len(reads))
    rec = tap.finish(3.0 + len(reads))
    rec = dataclasses.replace(rec, id="", started_at=start.started_at)
    return hashlib.sha256(repr(rec).encode()).hexdigest()

out = {}
for f in sorted(Path(sys.argv[1]).glob("*.sse")):
    path = "/v1/messages" if f.name.startswith("anthropic_messages") else "/v1/chat/completions"
    raw = f.read_bytes()
    variants = {"asis": raw, "lf": raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")}
    variants["crlf"] = variants["lf"].replace(b"\n", b"\r\n")
    variants["cr"] = variants["lf"].replace(b"\n", b"\r")
    for vname, body in variants.items():
        if not body:
            continue
        for sname, reads in splits(body, None):
            out[f"{f.name}/{vname}/{sname}"] = record(reads, path)
print(json.dumps(out))
"""


def digests(src: str, corpus: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus)], env=env, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"{src}: {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    corpus = Path(args[2]) if len(args) > 2 else CORPUS
    base, new = digests(args[0], corpus), digests(args[1], corpus)
    differ = sorted(k for k in base if base[k] != new.get(k))
    print(f"{len(base)} (file, line ends, split) cases from {corpus}; {len(differ)} differ")
    for key in differ[:20]:
        print("  differs:", key)
    return 1 if differ or set(base) != set(new) else 0


if __name__ == "__main__":
    sys.exit(main())
