"""Automatic choice of the steered layers and the scale α by an explicit objective (``docs/method.md`` §5).

Layers are ranked first (|Pearson r| of the projection with c(x), then ROC AUC: see
:meth:`~steering_adapter.directions.diagnostics.DirectionDiagnostics.best_layers`). The sweep then tries the top ``n``
layers for each ``n`` in ``layer_counts`` and each ``α`` of a grid in separation units (default
``−0.5, −1, −2, −4, −8`` to remove, the same positive to induce: α = −1 moves the refused prompts' mean onto the
complied prompts' mean along the direction), evaluates each point with
:func:`~steering_adapter.measure.evaluation.evaluate` on held-out prompts (resumable; base answers and the base side of
the KL are computed once for the whole sweep), then refines α around the best feasible grid point by a golden-section
search (:func:`bracketed_minimum`), so the choice is not limited to the grid. It picks by a trade-off:

- ``goal="remove"``: lowest refusal rate on the target sets, subject to harmful refusals ≥ base − δ, benign false
  refusals ≤ base + δ, every "other" set within ±δ, KL ≤ budget, and target answers that still answer: relevance
  above a floor (absolute, and relative to the base model's relevance on benign answers), little repetition, and a
  perplexity under the base model not far above its own answers' (:func:`quality_limits`);
- ``goal="induce"``: highest refusal rate on the target sets, subject to every non-target set within ±δ, KL ≤
  budget, and the same answer-quality limits on the benign / other sets (relative to their own base values).

Near-ties (within one target prompt by default) go to the smaller |α|, then the smaller KL, then fewer layers. The
table is saved as JSON and CSV with a Pareto plot, and :meth:`SweepResult.metadata` is what the adapter records in
``steering_metadata["selection"]``.

Modules:

- :mod:`.objective`: :class:`SelectionObjective`, :class:`SweepPoint`, the sweep's :class:`SweepResult`, the
  constraints (:func:`check_constraints`, :func:`quality_limits`), the choice (:func:`choose`,
  :func:`objective_value`) and the blocks the sweep may steer (:func:`steering_candidates`);
- :mod:`.refinement`: the golden-section search of α (:func:`bracketed_minimum`, :func:`refinement_bracket`);
- :mod:`.sweep_settings`: :class:`SweepSettings`, what the sweep tries (layer counts, α grid, refinement steps,
  adapter mode, gated / ungated variants) and its objective;
- :mod:`.sweep`: :func:`sweep_layers_and_scale` and the saved table and plot
  (:func:`save_sweep`, :func:`plot_pareto`).
"""

from steering_adapter.run.selection.objective import (
    DEFAULT_ALPHAS,
    GOALS,
    SelectionObjective,
    SweepPoint,
    SweepResult,
    check_constraints,
    choose,
    default_alphas,
    objective_value,
    quality_limits,
    steering_candidates,
)
from steering_adapter.run.selection.refinement import GOLDEN, bracketed_minimum, refinement_bracket
from steering_adapter.run.selection.sweep import plot_pareto, save_sweep, sweep_layers_and_scale
from steering_adapter.run.selection.sweep_settings import SweepSettings

__all__ = [
    "DEFAULT_ALPHAS",
    "GOALS",
    "GOLDEN",
    "SelectionObjective",
    "SweepPoint",
    "SweepResult",
    "SweepSettings",
    "bracketed_minimum",
    "check_constraints",
    "choose",
    "default_alphas",
    "objective_value",
    "plot_pareto",
    "quality_limits",
    "refinement_bracket",
    "save_sweep",
    "steering_candidates",
    "sweep_layers_and_scale",
]
