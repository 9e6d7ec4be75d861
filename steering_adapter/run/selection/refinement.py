"""Golden-section refinement of α around the best feasible grid point, so the choice is not limited to the grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence

GOLDEN = 0.3819660112501051  # 2 − φ: where a golden-section step probes the larger side of a bracket


def bracketed_minimum(
    f: Callable[[float], float], low: float, best: float, high: float, f_best: float, steps: int
) -> tuple[float, float]:
    """Golden-section search for a minimum of ``f`` inside ``[low, high]``, starting from a known interior point.

    Each step evaluates ``f`` once, at the golden section of the larger side of the current bracket, and keeps the
    better point inside a shrinking bracket (ties keep the current point).

    Args:
        f: the function (e.g.
            :func:`~steering_adapter.run.selection.objective.objective_value` of a sweep point at α = sign·t).
        low: the bracket's lower end, ``low < best``.
        best: the known interior point, ``best < high``.
        high: the bracket's upper end.
        f_best: ``f(best)``.
        steps: number of evaluations.

    Returns:
        ``(x, f(x))`` of the best point found.
    """
    if not low < best < high:
        raise ValueError(f"the bracket must satisfy low < best < high, got {low}, {best}, {high}")
    for _ in range(steps):
        if high - best >= best - low:
            x = best + GOLDEN * (high - best)
        else:
            x = best - GOLDEN * (best - low)
        fx = f(x)
        if fx < f_best:
            if x > best:
                low = best
            else:
                high = best
            best, f_best = x, fx
        elif x > best:
            high = x
        else:
            low = x
    return best, f_best


def refinement_bracket(grid: Sequence[float], best: float) -> tuple[float, float]:
    """The bracket ``(low, high)`` of magnitudes around the best grid magnitude ``best``: its grid neighbours, or,
    at an end of the grid, half of it below / one grid step beyond it above."""
    values = sorted({abs(float(v)) for v in grid})
    i = values.index(abs(best))
    low = values[i - 1] if i > 0 else values[0] / 2
    if i + 1 < len(values):
        high = values[i + 1]
    else:
        high = values[i] + (values[i] - values[i - 1] if i > 0 else values[i])
    return low, high
