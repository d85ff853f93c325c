"""The `streamtap` command line. Expected failures end in one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click

from . import native
from .durations import parse_duration
from .errors import ConfigError, StreamtapError

DEFAULT_DB = "sqlite:///streamtap.db"


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail early, in one line, instead of deep inside a server's start-up."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(f"cannot resolve {what} host {host!r}: {e.strerror or e}") from e
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ConfigError(f"{what} port {port} on {host} is in use ({e.strerror})") from e


@contextlib.contextmanager
def _session(db: str, *, must_exist: bool = True) -> Iterator[Any]:
    from sqlalchemy.orm import Session

    from .db.engine import check_schema, make_engine

    engine = make_engine(db)
    try:
        check_schema(engine)
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


class _Group(click.Group):
    """Turns expected errors into `streamtap: error: ...` and exit status 1 (2 for usage errors)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamtapError as e:
            click.echo(f"streamtap: error: {e}", err=True)
            ctx.exit(1)
        except BrokenPipeError:  # `streamtap export | head`
            sys.stderr.close()
            ctx.exit(0)


db_option = click.option(
    "--db",
    default=DEFAULT_DB,
    show_default=True,
    envvar="STREAMTAP_DB",
    help="SQLAlchemy database URL (sqlite:///file.db or postgresql+psycopg://user@host/db).",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="streamtap", message=f"%(prog)s, version %(version)s (hot path: {native.status})"
)
def main() -> None:
    """streamtap: record, measure and inspect LLM streaming traffic through a local proxy."""


@main.command()
@click.option("--upstream", help="Upstream API base URL for reverse mode, e.g. https://api.openai.com.")
@click.option(
    "--mode",
    type=click.Choice(["reverse", "regular"]),
    default="reverse",
    show_default=True,
    help="reverse: clients set base_url to the proxy; regular: clients set HTTPS_PROXY.",
)
@click.option("--listen-host", default="127.0.0.1", show_default=True)
@click.option("--listen-port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@db_option
@click.option(
    "--metrics-port",
    default=9464,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Prometheus /metrics port (0: off).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--instance", default="", help="Name of this proxy in a shared store [default: host:port].")
@click.option(
    "--keep-events",
    type=click.BOOL,
    default=True,
    show_default=True,
    metavar="true|false",
    help="Store one row per event (false: per-stream timings only, for very high volume).",
)
@click.option("--no-keep-events", "no_keep_events", is_flag=True, hidden=True)
@click.option(
    "--retention", help="Delete streams older than this, automatically (e.g. 7d; default: keep all)."
)
@click.option(
    "--capture",
    type=click.Choice(["full", "metadata"]),
    default="full",
    show_default=True,
    help="metadata: timings, models, usage and outcomes only; no prompt or completion text.",
)
@click.option(
    "--max-models",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Distinct model label values in the metrics before 'other'.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print a line per request.")
@click.option("--set", "extra", multiple=True, metavar="OPTION=VALUE", help="Any other mitmproxy option.")
def proxy(
    upstream: str | None,
    mode: str,
    listen_host: str,
    listen_port: int,
    db: str,
    metrics_port: int,
    metrics_host: str,
    instance: str,
    keep_events: bool,
    no_keep_events: bool,
    retention: str | None,
    capture: str,
    max_models: int,
    quiet: bool,
    extra: tuple[str, ...],
) -> None:
    """Run the recording proxy (mitmproxy with the streamtap addon)."""
    from .db.engine import make_engine, upgrade
    from .proxy import run_proxy

    if mode == "reverse":
        if not upstream:
            raise ConfigError("reverse mode needs --upstream URL (or use --mode regular)")
        if not re.match(r"^https?://[^/\s]+", upstream):
            raise ConfigError(f"bad --upstream {upstream!r}: expected http(s)://host[:port]")
    elif upstream:
        raise ConfigError("--upstream is for reverse mode; in regular mode clients choose the host")
    if retention:
        parse_duration(retention)
    check_port_free(listen_host, listen_port, "listen")
    if metrics_port:
        check_port_free(metrics_host, metrics_port, "metrics")
    engine = make_engine(db)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    options = {
        "streamtap_db": db,
        "streamtap_metrics_port": metrics_port,
        "streamtap_metrics_host": metrics_host,
        "streamtap_instance": instance,
        "streamtap_keep_events": keep_events and not no_keep_events,
        "streamtap_retention": retention or "",
        "streamtap_capture": capture,
        "streamtap_max_models": max_models,
    }
    click.echo(
        f"streamtap: proxy on http://{listen_host}:{listen_port}"
        + (f" -> {upstream}" if upstream else " (explicit proxy: set HTTPS_PROXY)")
        + (f"; metrics on http://{metrics_host}:{metrics_port}/metrics" if metrics_port else ""),
        err=True,
    )
    sys.exit(
        run_proxy(
            mode=mode,
            upstream=upstream,
            listen_host=listen_host,
            listen_port=listen_port,
            options=options,
            quiet=quiet,
            extra=list(extra),
        )
    )


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@db_option
def db_upgrade(db: str) -> None:
    """Create or migrate the database schema (Alembic `upgrade head`)."""
    from .db.engine import make_engine, upgrade

    engine = make_engine(db)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    click.echo("streamtap: database is up to date", err=True)


@main.command()
@db_option
@click.option("--since", help="Only streams started within this duration (90s, 15m, 1h, 7d).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats(db: str, since: str | None, as_json: bool) -> None:
    """Latency percentiles, finish reasons and outcomes of the recorded streams."""
    import json

    from . import read
    from .report import format_stats

    cutoff = datetime.now(UTC) - parse_duration(since) if since else None
    with _session(db) as session:
        result = read.stats(session, since=cutoff)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        click.echo(format_stats(result))


@main.command()
@db_option
@click.option("--last", type=click.IntRange(min=1), help="The N most recent exchanges [default: 10].")
@click.option("--id", "ids", multiple=True, help="One exchange by id (or unique prefix); repeatable.")
@click.option("--since", help="Exchanges started within this duration.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "sse", "har"]),
    default="json",
    show_default=True,
    help="json: an array with events; sse: the stream bytes as received; har: an HTTP Archive 1.2.",
)
def export(db: str, last: int | None, ids: tuple[str, ...], since: str | None, fmt: str) -> None:
    """Print recorded exchanges, newest first."""
    from . import read
    from .export import record_to_sse, records_to_json

    if last and ids:
        raise ConfigError("use either --last or --id")
    cutoff = datetime.now(UTC) - parse_duration(since) if since else None
    with _session(db) as session:
        if ids:
            records = [read.get_stream(session, i) for i in ids]
        else:
            records = read.get_streams(session, last=last or (None if cutoff else 10), since=cutoff)
    if fmt == "json":
        click.echo(records_to_json(records))
    elif fmt == "har":
        from .har import records_to_har_json

        click.echo(records_to_har_json(records))
    else:
        out = sys.stdout.buffer
        for record in records:
            out.write(record_to_sse(record))
        out.flush()


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Time scale: 2 replays twice as fast; 0 sends everything at once.",
)
@click.option(
    "--select",
    "specs",
    multiple=True,
    metavar="SPEC",
    help="id:ID (repeatable: they take turns), model:NAME (model:* for any), match (the recording with "
    "the request's messages), outcome:OUTCOME. Default: the latest recording of the requested model.",
)
def replay(db: str, host: str, port: int, speed: float, specs: tuple[str, ...]) -> None:
    """Serve recorded exchanges as an LLM API, with the recorded bytes and timing.

    POST /v1/chat/completions, /v1/responses and /v1/messages are answered by a recording of that API; the
    header x-streamtap-replay-id: ID picks one exactly. Every answer carries x-streamtap-replay-of: ID.
    """
    from .replay import run

    check_port_free(host, port, "replay")
    run(db, host, port, speed, specs)


@main.command("import")
@click.argument("file")
@db_option
@click.option("--model", help="The requested model to record (default: the request's, in a HAR file).")
@click.option(
    "--path",
    "api_path",
    default="/v1/chat/completions",
    show_default=True,
    help="The request path of an .sse file; it picks the API (/v1/responses, /v1/messages).",
)
@click.option(
    "--gap-ms",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Synthetic time between events when the file has no per-event times.",
)
def import_(file: str, db: str, model: str | None, api_path: str, gap_ms: float) -> None:
    """Import an .sse body (one exchange) or a HAR file (every LLM exchange in it) as recordings."""
    from .db.engine import make_engine, upgrade
    from .importer import load_file, write_records

    loaded = load_file(file, model=model, api_path=api_path, gap_ms=gap_ms)
    engine = make_engine(db)
    try:
        upgrade(engine)
        write_records(engine, loaded.records)
    finally:
        engine.dispose()
    skipped = f" (skipped {loaded.skipped}: no LLM exchange or no body)" if loaded.skipped else ""
    n = len(loaded.records)
    click.echo(f"streamtap: imported {n} exchange{'s' if n != 1 else ''} from {file}{skipped}", err=True)


@main.command()
@db_option
@click.option("--older-than", required=True, help="Delete streams started longer ago than this (e.g. 7d).")
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Streams deleted per transaction.",
)
def prune(db: str, older_than: str, batch: int) -> None:
    """Delete old streams and their events, in batches that never block the proxy's writer for long."""
    from .db.engine import check_schema, make_engine
    from .maintenance import prune as prune_streams

    cutoff = datetime.now(UTC) - parse_duration(older_than)
    engine = make_engine(db)
    try:
        check_schema(engine)
        n = prune_streams(engine, before=cutoff, batch=batch)
    finally:
        engine.dispose()
    click.echo(
        f"streamtap: deleted {n} stream{'s' if n != 1 else ''} started before {cutoff:%Y-%m-%d %H:%M:%S} UTC",
        err=True,
    )


@main.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--profile",
    default="default",
    show_default=True,
    type=click.Choice(["default", "fast", "instant", "slow", "demo"]),
    help="Latency profile (TTFT and gap distributions).",
)
def mock_upstream(host: str, port: int, profile: str) -> None:
    """A simulated OpenAI-compatible provider that streams realistic chat completions."""
    from .mock_upstream import run

    if port:
        check_port_free(host, port, "mock-upstream")
    run(host, port, profile)


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
def dashboard(db: str, host: str, port: int) -> None:
    """The Streamlit dashboard: latency, finish reasons, and every recorded stream."""
    from .launch import run_dashboard

    check_port_free(host, port, "dashboard")
    sys.exit(run_dashboard(db=db, host=host, port=port))


@main.command()
@click.option("--db", default="sqlite:///demo.db", show_default=True, help="Where the demo records.")
@click.option("--listen-port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=9464, show_default=True, type=click.IntRange(1, 65535))
@click.option("--dashboard-port", default=8501, show_default=True, type=click.IntRange(1, 65535))
@click.option("--upstream-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--requests", "initial", default=60, show_default=True, help="Requests in the first burst.")
@click.option("--no-dashboard", is_flag=True, help="Skip the dashboard (headless demo).")
@click.option("--duration", help="Stop after this long (default: until Ctrl-C).")
def demo(
    db: str,
    listen_port: int,
    metrics_port: int,
    dashboard_port: int,
    upstream_port: int,
    initial: int,
    no_dashboard: bool,
    duration: str | None,
) -> None:
    """Everything at once: simulated provider, proxy, metrics, dashboard and live traffic."""
    from .demo import run_demo

    for port, what in ((listen_port, "proxy"), (metrics_port, "metrics"), (upstream_port, "mock-upstream")):
        check_port_free("127.0.0.1", port, what)
    if not no_dashboard:
        check_port_free("127.0.0.1", dashboard_port, "dashboard")
    sys.exit(
        run_demo(
            db=db,
            listen_port=listen_port,
            metrics_port=metrics_port,
            dashboard_port=None if no_dashboard else dashboard_port,
            upstream_port=upstream_port,
            initial=initial,
            duration=parse_duration(duration) if duration else None,
        )
    )


if __name__ == "__main__":  # pragma: no cover
    main()
