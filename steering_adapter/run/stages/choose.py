"""Stage: the sweep of layers × α (× gated / ungated) on the selection half, then the refinement of α.

Owns ``selection/`` (answer and judgment records per sweep point, ``sweep.csv``, the Pareto plot), moved aside when
the vectors, the gate, the prompts or the settings change.
"""

from __future__ import annotations

import dataclasses

from steering_adapter.directions.conditions import ConditionFit
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.run.selection.objective import SweepResult, default_alphas, steering_candidates
from steering_adapter.run.selection.sweep import save_sweep, sweep_layers_and_scale
from steering_adapter.run.selection.sweep_settings import SweepSettings
from steering_adapter.run.stages.benchmark import enforce_max_drop
from steering_adapter.run.stages.context import EstimatedDirections, RunContext
from steering_adapter.run.stages.folders import fingerprint, gate_key, stage_dir, tensor_digest
from steering_adapter.run.stages.inputs import eval_sets, recipe_sampling, resolve_prompts
from steering_adapter.utils import distributed

__all__ = ["NoFeasibleChoiceError", "select_layers_and_alpha"]


class NoFeasibleChoiceError(RuntimeError):
    """The selection found no (layers, α) that meets the recipe's constraints."""


def select_layers_and_alpha(
    ctx: RunContext, estimated: EstimatedDirections, condition: ConditionFit | None
) -> SweepResult:
    """Sweep layer counts × α on the selection half of the evaluation sets and choose the best feasible point.

    Args:
        ctx: the run.
        estimated: the direction stage's vectors and layer ranking.
        condition: the fitted gate, or ``None`` (ungated only).

    Returns:
        The :class:`~steering_adapter.run.selection.SweepResult`, the same on every process; its ``choice`` is set.

    Raises:
        NoFeasibleChoiceError: no point meets the constraints (``selection/sweep.csv`` is still written).
    """
    recipe, tokenizer, sampler, judge, relevance = ctx.recipe, ctx.tokenizer, ctx.sampler, ctx.judge, ctx.relevance
    out, times, progress, log = ctx.out, ctx.times, ctx.progress, ctx.log
    directions, ranking = estimated.vectors, estimated.ranking
    sel = recipe.selection
    kl_selection = resolve_prompts(recipe.prompts.neutral, "selection", recipe) if recipe.prompts.neutral else None
    objective = sel.objective()
    alphas = sel.alphas if sel.alphas is not None else list(default_alphas(sel.goal))
    log(
        f"[select] {len(sel.layer_counts)} layer counts × {len(alphas)} α on the selection half"
        + (f", then {sel.refine_steps} refinement steps" if sel.refine_steps else "")
    )
    if recipe.estimator.layers is None:  # every block was collected: directions hold the whole depth
        depth = max(directions) + 1
        ranking = steering_candidates(ranking, depth, sel.min_depth_fraction)
        log(f"[select] candidate blocks (from {sel.min_depth_fraction} of {depth}), best first: {ranking}")
    if condition is not None:
        log(f"[select] gated variants steer only blocks at or after the gate's block {condition.layer}")
    selection_sets = eval_sets(recipe, "selection", sel.max_prompts_per_set)
    selection_dir = stage_dir(
        out / "selection",
        fingerprint(
            tensor_digest(directions),
            ranking,
            gate_key(condition),
            recipe.gating.mode,
            dataclasses.asdict(sel),
            [dataclasses.asdict(s) for s in selection_sets],
            kl_selection,
            recipe_sampling(recipe),
            judge.name,
        ),
        log,
    )
    with times("select layers and α"):
        sweep = sweep_layers_and_scale(
            sampler,
            tokenizer,
            directions,
            ranking,
            selection_sets,
            judge,
            selection_dir,
            settings=SweepSettings(
                layer_counts=sel.layer_counts,
                alphas=alphas,
                refine_steps=sel.refine_steps,
                objective=objective,
                include_ungated=recipe.gating.mode != "on",
            ),
            evaluation=EvaluationSettings(
                kl_prompts=kl_selection,
                kl_tokens=sel.kl_tokens,
                relevance=relevance,
                batch_size=recipe.sampling.batch_size,
                progress=progress,
                unparseable=recipe.scoring.unparseable,  # not in the fingerprint: points are rescored from records
            ),
            sampling=SamplingSettings.from_kwargs(**recipe_sampling(recipe)),
            condition=condition,
        )
    sweep = distributed.broadcast_object(sweep)  # every process evaluates rank 0's choice
    if recipe.benchmarks.max_drop is not None:  # the benchmark constraint, then the sweep's tables say its verdicts
        sweep = enforce_max_drop(ctx, sweep, directions, condition)
        if distributed.is_main():
            save_sweep(sweep, selection_dir)
    if sweep.gate_closed:
        sizes = {s.name: len(s.prompts) for s in selection_sets}
        log(
            "[select] gated points reused the base answers of the prompts their gate leaves alone: "
            + ", ".join(f"{name} {count}/{sizes[name]}" for name, count in sweep.gate_closed.items())
        )
    if sweep.choice is None:
        raise NoFeasibleChoiceError(
            f"no layer/α combination met the constraints; see {out / 'selection' / 'sweep.csv'} "
            "(relax selection.delta / kl_budget / benchmarks.max_drop or widen alphas)"
        )
    choice = sweep.choice
    log(f"[select] chose layers {choice.layers}, α = {choice.alpha:g}" + (", gated" if choice.gated else ""))
    return sweep
