"""What the layer / α sweep tries and how it chooses: :class:`SweepSettings`.

The other values of :func:`~steering_adapter.run.selection.sweep.sweep_layers_and_scale` are typed the same way: how
each point is evaluated (:class:`~steering_adapter.measure.evaluation_settings.EvaluationSettings`) and how its
answers are sampled (:class:`~steering_adapter.measure.sampling.settings.SamplingSettings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from steering_adapter.run.selection.objective import SelectionObjective, default_alphas

__all__ = ["SweepSettings"]


@dataclass(frozen=True)
class SweepSettings:
    """The candidates of the layer / α sweep, the refinement of α and the objective that chooses among them.

    Attributes:
        layer_counts: numbers of top-ranked layers to try (each ``>= 1``; at most the number of ranked layers).
        alphas: scales to try, non-zero (``None``: :func:`~steering_adapter.run.selection.objective.default_alphas`
            of the objective's goal).
        refine_steps: after the grid, golden-section evaluations of α around the best feasible grid point of the
            chosen variant, between its grid neighbours of the same sign (``0``: the grid only).
        objective: the :class:`~steering_adapter.run.selection.objective.SelectionObjective` (default: remove,
            δ = 5 points, KL ≤ 0.5, quality floors on).
        mode: adapter mode of the candidates (``"add"``).
        include_ungated: with a condition, also try ungated variants (``False``: gated only).
    """

    layer_counts: Sequence[int] = (1, 2, 4)
    alphas: Sequence[float] | None = None
    refine_steps: int = 3
    objective: SelectionObjective = field(default_factory=SelectionObjective)
    mode: str = "add"
    include_ungated: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_counts", tuple(self.layer_counts))
        if self.alphas is not None:
            object.__setattr__(self, "alphas", tuple(self.alphas))
        if not self.layer_counts or min(self.layer_counts) < 1:
            raise ValueError(f"layer_counts must be a non-empty list of counts >= 1, got {list(self.layer_counts)}")
        if self.alphas is not None and not self.alphas:
            raise ValueError("alphas is empty")
        if self.alphas is not None and any(a == 0 for a in self.alphas):
            raise ValueError(f"alphas must be non-zero, got {list(self.alphas)}")
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")

    def alpha_grid(self) -> tuple[float, ...]:
        """The α grid: :attr:`alphas`, or the objective's default grid."""
        return tuple(default_alphas(self.objective.goal) if self.alphas is None else self.alphas)
