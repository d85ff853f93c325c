"""`streamtap demo`: the simulated provider, the proxy, the dashboard and live traffic, in one command."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import click

from .db.engine import make_engine, upgrade

# (model, weight, request extras): a realistic mix with slow starters, reasoning, tools, length stops and
# the occasional fault (the simulated provider picks faults by model name).
TRAFFIC: list[tuple[str, int, dict[str, Any]]] = [
    ("gpt-mock-fast", 30, {}),
    ("gpt-mock-mini", 20, {"max_tokens": 24}),
    ("mock-reasoner", 15, {}),
    ("gpt-mock-default", 20, {}),
    (
        "gpt-mock-fast",
        6,
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            ]
        },
    ),
    ("mock-fault-error-event", 2, {}),
    ("mock-fault-disconnect", 2, {}),
    ("mock-fault-http-429", 2, {}),
    ("mock-fault-no-finish", 1, {}),
]
PROMPTS = [
    "Explain server-sent events in two sentences.",
    "What's the weather in Lisbon? Use the tool.",
    "Write a haiku about latency.",
    "Summarize the plot of Hamlet.",
    "List three uses of a reverse proxy.",
]


def _one_request(base_url: str, rng: random.Random, stop: threading.Event) -> None:
    import openai

    model, _, extras = rng.choices(TRAFFIC, weights=[w for _, w, _ in TRAFFIC])[0]
    prompt = rng.choice(PROMPTS)
    stream = rng.random() < 0.9
    with openai.OpenAI(
        base_url=base_url, api_key="sk-demo-" + rng.choice("abc"), max_retries=0, timeout=60
    ) as c:
        try:
            if not stream:
                c.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], **extras
                )
                return
            chunks = c.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                stream=True,
                stream_options={"include_usage": True},
                **extras,
            )
            for i, _chunk in enumerate(chunks):
                if stop.is_set():
                    break
                if i == 8 and rng.random() < 0.03:  # a user who closes the tab
                    break
            chunks.close()
        except openai.OpenAIError:
            pass  # faults are part of the mix: the proxy records them


def _traffic(base_url: str, initial: int, stop: threading.Event) -> None:
    rng = random.Random(42)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for f in [
            pool.submit(_one_request, base_url, random.Random(rng.random()), stop) for _ in range(initial)
        ]:
            if stop.is_set():
                break
            f.result()
    while not stop.wait(rng.uniform(0.5, 2.5)):
        _one_request(base_url, random.Random(rng.random()), stop)


def run_demo(
    *,
    db: str,
    listen_port: int,
    metrics_port: int,
    dashboard_port: int | None,
    upstream_port: int,
    initial: int,
    duration: timedelta | None,
) -> int:
    from .launch import start_dashboard
    from .mock_upstream import MockUpstream

    engine = make_engine(db)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    mock = MockUpstream(port=upstream_port, profile="demo")
    mock.start()
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamtap",
            "proxy",
            "--upstream",
            mock.url,
            "--db",
            db,
            "--listen-port",
            str(listen_port),
            "--metrics-port",
            str(metrics_port),
            "--quiet",
        ],
        # its own session: Ctrl-C reaches the demo only, which stops the traffic first, then the proxy
        start_new_session=True,
    )
    dashboard = (
        start_dashboard(db=db, host="127.0.0.1", port=dashboard_port, quiet=True) if dashboard_port else None
    )
    stop = threading.Event()
    traffic: threading.Thread | None = None
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C even when started with SIGINT ignored (nohup, &)
        signal.signal(sig, lambda *_: stop.set())
    base_url = f"http://127.0.0.1:{listen_port}/v1"
    try:
        _wait_port(listen_port, proxy)
        click.echo(
            "\nstreamtap demo is running (Ctrl-C stops everything)\n"
            + (f"  dashboard   http://127.0.0.1:{dashboard_port}\n" if dashboard_port else "")
            + f"  metrics     http://127.0.0.1:{metrics_port}/metrics\n"
            f"  proxy       {base_url}  ->  simulated provider {mock.url}\n"
            f"  database    {db}\n\n"
            "send your own request through the proxy:\n"
            f"  curl -N {base_url}/chat/completions -H 'content-type: application/json' "
            """-d '{"model":"gpt-mock-fast","stream":true,"messages":[{"role":"user","content":"hi"}]}'\n"""
            f"""  python -c "import openai; c=openai.OpenAI(base_url='{base_url}', api_key='x'); """
            """print(c.chat.completions.create(model='gpt-mock-fast', """
            """messages=[{'role':'user','content':'hi'}]).choices[0].message.content)"\n"""
            "\nthen: streamtap stats --db " + db + "   |   streamtap export --db " + db + " --last 1\n",
            err=True,
        )
        traffic = threading.Thread(target=_traffic, args=(base_url, initial, stop), daemon=True)
        traffic.start()
        deadline = time.monotonic() + duration.total_seconds() if duration else None
        while not stop.is_set():
            if proxy.poll() is not None:
                click.echo(f"streamtap: error: the proxy exited with status {proxy.returncode}", err=True)
                return 1
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if traffic is not None:
            traffic.join(timeout=10)  # open streams end before the proxy does
        for child in (proxy, dashboard):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in (proxy, dashboard):
            if child is not None:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
        mock.stop()
        click.echo("streamtap demo stopped; everything recorded is in " + db, err=True)
    return 0


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamtap: error: the proxy exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("streamtap: error: the proxy did not start within 60 s")
