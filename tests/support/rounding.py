"""Checks of figures that were stored rounded, against other stored (rounded) figures.

A ratio recomputed from rounded seconds differs from the stored, rounded ratio by an amount
that depends on the seconds' size, so a fixed tolerance fails on some runs. Here the check
is exact instead: the stored figure must lie in the interval that the formula takes over
every value its rounded inputs can stand for, widened by the stored figure's own rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

# (stored value, decimal places it was rounded to; None when stored exactly)
Stored = tuple[float, int | None]


def _interval(value: float, decimals: int | None) -> tuple[float, float]:
    if decimals is None:
        return value, value
    half = 0.5 * 10.0**-decimals
    return value - half, value + half


def derived_interval(formula: Callable[..., float], *inputs: Stored) -> tuple[float, float]:
    """Smallest and largest value of ``formula`` (monotonic in each input) over the inputs'
    rounding intervals."""
    corners = [formula(*corner) for corner in itertools.product(*(_interval(*i) for i in inputs))]
    return min(corners), max(corners)


def assert_derived(stored: Stored, formula: Callable[..., float], *inputs: Stored) -> None:
    """``stored`` is ``formula(*inputs)`` before the rounding of all of them."""
    low, high = derived_interval(formula, *inputs)
    stored_low, stored_high = _interval(*stored)
    told = f"{stored[0]} from {[value for value, _ in inputs]}: possible {low:.6g} .. {high:.6g}"
    assert stored_high >= low, told
    assert stored_low <= high, told
