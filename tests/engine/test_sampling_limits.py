"""One set of sampling bounds, used by config, personas, room settings and the engine."""

from __future__ import annotations

import math

import pytest

from engine.sampling import SamplingParams, parse_sampling_value
from errors import CommandError
from sampling_limits import SAMPLING_BOUNDS, sampling_problem


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_values_are_refused(raw: str):
    value = parse_sampling_value("temperature", raw)
    assert not math.isfinite(value)
    with pytest.raises(CommandError, match="temperature"):
        SamplingParams().merged({"temperature": value}).validated()


def test_each_bound_refuses_just_outside_and_takes_the_edge():
    assert sampling_problem("top_p", 0.0) and not sampling_problem("top_p", 1.0)
    assert sampling_problem("max_tokens", 0) and not sampling_problem("max_tokens", 1)
    assert sampling_problem("repeat_penalty", 3.01) and not sampling_problem("repeat_penalty", 3.0)
    assert set(SAMPLING_BOUNDS) <= {f for f in SamplingParams.__dataclass_fields__}
    SamplingParams().validated()  # the defaults are inside the bounds
