"""The valid range of every sampling value, written down once.

Config defaults, persona and card overrides, a room's ``settings set`` and the engine's
last check before generation all read this table, so a value that loads is a value
that generates. A leaf module like ``errors``: every layer may import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """``low`` (exclusive when ``low_open``) to ``high`` inclusive; None means unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None when it is fine. NaN passes no comparison, so
        it is refused first."""
        if not math.isfinite(value):
            return f"must be a finite number {self.describe()}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            return f"must be {self.describe()}"
        return None

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        left = "(" if self.low_open else "["
        return f"in {left}{_num(self.low)}, {_num(self.high)}]"

    def field_bounds(self) -> dict[str, Any]:
        """Keyword arguments for a pydantic ``Field``."""
        bounds: dict[str, Any] = {}
        if self.low is not None:
            bounds["gt" if self.low_open else "ge"] = self.low
        if self.high is not None:
            bounds["le"] = self.high
        return bounds


def sampling_field(name: str, default: Any) -> Any:
    """A pydantic ``Field`` for sampling value ``name`` with its bounds from the table.

    A function rather than ``Field(**bounds)`` at each use: type checkers read a class-level
    ``Field(**kwargs)`` as a dataclass field they cannot check.
    """
    from pydantic import Field

    return Field(default, **SAMPLING_BOUNDS[name].field_bounds())


def _num(value: float | None) -> str:
    return f"{value:g}" if value is not None else "?"


SAMPLING_BOUNDS: dict[str, Bounds] = {
    "temperature": Bounds(0.0, 5.0),
    "top_p": Bounds(0.0, 1.0, low_open=True),  # 0 would leave no token to choose
    "top_k": Bounds(0, None),  # 0 turns top-k off
    "min_p": Bounds(0.0, 1.0),
    "repeat_penalty": Bounds(0.5, 3.0),
    "max_tokens": Bounds(1, 8192),
}


def range_problem(name: str, value: Any) -> str | None:
    """``must be …`` when ``value`` is a number outside ``name``'s bounds; None otherwise."""
    bounds = SAMPLING_BOUNDS.get(name)
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return bounds.problem(value)


def sampling_problem(name: str, value: Any) -> str | None:
    """One line naming the field and its range when ``value`` is out of it; None when valid."""
    problem = range_problem(name, value)
    return f"sampling {name}={value!r} is out of range: {problem}" if problem else None
