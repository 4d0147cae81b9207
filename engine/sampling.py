"""Sampling settings and how layers of overrides combine.

Order of precedence, lowest first: model defaults from config, per-model overrides,
the persona's override, then the room's own settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from errors import CommandError
from sampling_limits import SAMPLING_BOUNDS, sampling_problem

# SmolLM2-135M loops on one phrase with plain sampling. A repeat penalty of 1.15 over
# the last 64 tokens, with min_p 0.05 trimming the long tail, keeps it readable without
# garbling names that legitimately repeat. See README "Sampling defaults".
DEFAULT_REPEAT_PENALTY = 1.15


@dataclass(frozen=True)
class SamplingParams:
    """Everything that shapes token choice for one generation."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    max_tokens: int = 256
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    def merged(self, overrides: dict[str, Any] | None) -> SamplingParams:
        """A copy with every non-None override applied; unknown keys are an error."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise CommandError(f"unknown sampling setting {key!r}; known: {', '.join(sorted(known))}")
            if value is None:
                continue
            changes[key] = tuple(value) if key == "stop" else value
        return replace(self, **changes)

    def validated(self) -> SamplingParams:
        """Raise a CommandError naming the first value out of range (``sampling_limits``)."""
        for name in SAMPLING_BOUNDS:
            problem = sampling_problem(name, getattr(self, name))
            if problem:
                raise CommandError(problem)
        return self


SAMPLING_KEYS = tuple(f.name for f in fields(SamplingParams))


def parse_sampling_value(key: str, raw: str) -> Any:
    """Turn a command argument into the right type for ``key``."""
    if key not in SAMPLING_KEYS:
        raise CommandError(f"unknown sampling setting {key!r}; known: {', '.join(SAMPLING_KEYS)}")
    try:
        if key in ("top_k", "max_tokens", "seed"):
            return int(raw)
        if key == "stop":
            return [s for s in raw.split("|") if s]
        return float(raw)
    except ValueError:
        raise CommandError(f"{key} must be a number, not {raw!r}") from None
