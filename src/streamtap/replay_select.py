"""Which recording answers a replayed request: `--select` specs, the default rule, round-robin turns.

The read side of `streamtap replay`: functions and a class that take the database, no networking.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import read
from .db.models import Stream
from .errors import ConfigError, NotFoundError
from .interpreters import ANTHROPIC_MESSAGES, OPENAI_RESPONSES, api_name
from .records import FINAL_OUTCOMES, Outcome, StreamRecord

_SELECT_HELP = "use id:ID, model:NAME (model:* for any), match or outcome:OUTCOME"


@dataclass(frozen=True, slots=True)
class Selection:
    """The `--select` specs. Filters combine (AND); the request's own model applies unless `model` or `ids`
    says otherwise. Without `ids`, `model` or `outcome` the latest fitting recording answers; with any of them
    (or several `match` hits), they take turns (round-robin, oldest first)."""

    ids: tuple[str, ...] = ()
    model: str | None = None  # "*": any model
    outcome: Outcome | None = None
    match: bool = False

    @property
    def explicit(self) -> bool:
        return bool(self.ids or self.model or self.outcome)

    def describe(self) -> str:
        parts = [f"id:{i}" for i in self.ids]
        parts += [f"model:{self.model}"] if self.model else []
        parts += [f"outcome:{self.outcome.value}"] if self.outcome else []
        return " ".join(parts + (["match"] if self.match else []))


def parse_selection(specs: Sequence[str]) -> Selection:
    """`id:ID` (repeatable), `model:NAME`, `match`, `outcome:OUTCOME`; a bad spec is a ConfigError."""
    ids: list[str] = []
    model: str | None = None
    outcome: Outcome | None = None
    match = False
    for spec in specs:
        key, sep, value = spec.strip().partition(":")
        value = value.strip()
        if key == "match" and not sep:
            match = True
        elif key == "id" and value:
            ids.append(value)
        elif key == "model" and value and model is None:
            model = value
        elif key == "outcome" and value and outcome is None:
            if value not in {o.value for o in FINAL_OUTCOMES}:
                known = ", ".join(o.value for o in FINAL_OUTCOMES)
                raise ConfigError(f"bad --select {spec!r}: the outcome is one of {known}")
            outcome = Outcome(value)
        else:
            raise ConfigError(f"bad --select {spec!r}: {_SELECT_HELP}, each once (id: repeatable)")
    return Selection(tuple(ids), model, outcome, match)


def resolve_ids(session: Session, selection: Selection) -> Selection:
    """Unique prefixes become whole ids; an unknown id is a NotFoundError (a one-line CLI error)."""
    ids = tuple(read.get_stream(session, i, with_events=False).id for i in selection.ids)
    return Selection(ids, selection.model, selection.outcome, selection.match)


def _conversation(api: str, body: dict[str, Any]) -> Any:
    """What `--select match` compares: the messages (chat, Anthropic, with its system prompt) or the input."""
    if api == OPENAI_RESPONSES:
        return body.get("input"), body.get("instructions")
    if api == ANTHROPIC_MESSAGES:
        return body.get("messages"), body.get("system")
    return body.get("messages")


def json_object(text: str | bytes | None) -> dict[str, Any]:
    """A request body as a dict; {} when it is not a JSON object."""
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


class Chooser:
    """Picks the recording that answers a request. Thread-safe: called from worker threads."""

    def __init__(self, engine: sa.Engine, selection: Selection) -> None:
        self.engine = engine
        self.selection = selection
        self._turns: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def choose(self, path: str, body: dict[str, Any], replay_id: str | None) -> StreamRecord:
        """The recording to replay, with its events. NotFoundError names what was asked when none fits."""
        with Session(self.engine) as session:
            if replay_id:
                return read.get_stream(session, replay_id)
            chosen = self._pick(session, api_name(path), body)
            return read.get_streams(session, ids=[chosen])[0]

    def _pick(self, session: Session, api: str, body: dict[str, Any]) -> str:
        sel = self.selection
        s = Stream
        where: list[sa.ColumnElement[bool]] = [s.api == api]
        where.append(
            s.outcome == sel.outcome.value
            if sel.outcome
            else s.outcome.in_([o.value for o in FINAL_OUTCOMES])
        )
        if sel.ids:
            where.append(s.id.in_(sel.ids))
        order = (s.started_at, s.id)
        asked = body.get("model") if isinstance(body.get("model"), str) else None
        model = sel.model if sel.model else (None if sel.ids else asked)

        if sel.match and (wanted := _conversation(api, body)) not in (None, (None, None)):
            columns = (s.id, s.request_model, s.model, s.request_body)
            stmt = sa.select(*columns).where(*where, s.request_body.is_not(None))
            same = [
                (i, model is not None and model in (rm, m))
                for i, rm, m, rb in session.execute(stmt.order_by(*order))
                if _conversation(api, json_object(rb)) == wanted
            ]
            if same:
                preferred = [i for i, of_model in same if of_model] or [i for i, _ in same]
                return self._turn(preferred)

        ids: Sequence[str] = []
        if model is None or model == "*":
            ids = session.scalars(sa.select(s.id).where(*where).order_by(*order)).all()
        else:  # the model the client asked for, else the model the upstream reported
            for column in (s.request_model, s.model):
                ids = session.scalars(sa.select(s.id).where(*where, column == model).order_by(*order)).all()
                if ids:
                    break
        if not ids:
            what = f"{api} recording" + (f" of model {model!r}" if model and model != "*" else "")
            chosen = f" selected by {sel.describe()}" if sel.explicit else ""
            raise NotFoundError(f"no {what}{chosen} to replay")
        if not sel.explicit:
            return ids[-1]
        return self._turn(ids)

    def _turn(self, ids: Sequence[str]) -> str:
        if len(ids) == 1:
            return ids[0]
        key = tuple(ids)
        with self._lock:
            n = self._turns.get(key, 0)
            self._turns[key] = n + 1
        return ids[n % len(ids)]
