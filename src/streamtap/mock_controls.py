"""How a request asks the simulated provider to behave: timing profiles and the `x-mock-*` headers.

Timing is drawn per request from a seeded `random.Random`: lognormal around the profile's medians
(mostly near the median, with a long right tail, as latencies tend to be), plus rare stalls.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

FAULTS = (
    "error-event",
    "error-data",
    "disconnect",
    "http-429",
    "http-500",
    "http-502",
    "slow-first-token",
    "no-finish",
    "huge-event",
    "invalid-utf8",
    "non-json",
    "keepalive",
    "gzip",
)
HUGE_DEFAULT = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Profile:
    """Timing of one simulated model: medians in seconds, lognormal `spread`, rare stalls."""

    ttft: float
    gap: float
    spread: float = 0.35
    stall_chance: float = 0.0
    stall: float = 0.0
    chunks: tuple[int, int] = (20, 80)


_DEFAULT = Profile(ttft=0.3, gap=0.025, stall_chance=0.005, stall=0.5)
_QUICK = Profile(ttft=0.12, gap=0.01)
_SLOW_START = Profile(ttft=1.2, gap=0.02, stall_chance=0.01, stall=0.6)
PROFILES: dict[str, Profile | None] = {
    "default": _DEFAULT,
    "fast": Profile(ttft=0.02, gap=0.005, spread=0.2),
    "instant": Profile(ttft=0.0, gap=0.0, spread=0.0),
    "slow": Profile(ttft=2.0, gap=0.08, stall_chance=0.02, stall=1.0),
    "demo": None,  # chosen per model, see profile_for
}


def profile_for(name: str, model: str) -> Profile:
    chosen = PROFILES[name]
    if chosen is not None:
        return chosen
    lowered = model.lower()
    if "fast" in lowered or "mini" in lowered:
        return _QUICK
    return _SLOW_START if "reason" in lowered else _DEFAULT


@dataclass(frozen=True, slots=True)
class Controls:
    """The `x-mock-*` request headers."""

    ttft: float | None = None
    gap: float | None = None
    chunks: int | None = None
    fault: str | None = None
    fault_after: int = 3
    huge_bytes: int = HUGE_DEFAULT
    tool_calls: int | None = None


def _number(headers: Mapping[str, str], name: str, low: float) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    value = float(raw)  # ValueError is turned into a 400 by the caller
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a number >= {low:g}")
    return value


def parse_controls(headers: Mapping[str, str], model: str) -> Controls:
    """Raises ValueError with a message fit for a 400 response."""
    fault = headers.get("x-mock-fault")
    if fault is None and model.startswith("mock-fault-"):
        fault = model.removeprefix("mock-fault-")
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    ttft, gap = _number(headers, "x-mock-ttft-ms", 0), _number(headers, "x-mock-gap-ms", 0)
    ints = {
        n: _number(headers, f"x-mock-{n}", low)
        for n, low in (("chunks", 0), ("fault-after", 0), ("huge-bytes", 1), ("tools", 0))
    }
    return Controls(
        ttft=None if ttft is None else ttft / 1000,
        gap=None if gap is None else gap / 1000,
        chunks=None if ints["chunks"] is None else int(ints["chunks"]),
        fault=fault,
        fault_after=int(ints["fault-after"] if ints["fault-after"] is not None else 3),
        huge_bytes=int(ints["huge-bytes"] or HUGE_DEFAULT),
        tool_calls=None if ints["tools"] is None else int(ints["tools"]),
    )


class Timing:
    """Delays for one request: exact when the headers ask for them, else drawn from the profile."""

    def __init__(self, profile: Profile, controls: Controls, rng: random.Random) -> None:
        self.profile, self.controls, self.rng = profile, controls, rng

    def _draw(self, median: float) -> float:
        if median <= 0:
            return 0.0
        return median * min(6.0, max(0.25, math.exp(self.rng.gauss(0, self.profile.spread))))

    def ttft(self) -> float:
        if self.controls.fault == "slow-first-token":
            return 30.0
        return self.controls.ttft if self.controls.ttft is not None else self._draw(self.profile.ttft)

    def gap(self) -> float:
        if self.controls.gap is not None:
            return self.controls.gap
        stall = self.profile.stall_chance and self.rng.random() < self.profile.stall_chance
        return self._draw(self.profile.gap) + (
            self.profile.stall * self.rng.uniform(0.5, 1.5) if stall else 0
        )
