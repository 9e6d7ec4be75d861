"""Stage: general benchmarks (the recipe's ``benchmarks`` section) of the base model and of the chosen adapter.

Owns ``benchmarks/``: one JSON file per task and variant (``base``, ``steered`` — the adapter as published, gated if it
is — and ``ungated``), written as each finishes, so an interrupted run keeps what it measured; a variant's file is
named by the fingerprint of what it measured (vectors, α, gate, task settings), so a changed adapter is measured
again and nothing stale is reused. With ``max_drop`` it also enforces the selection constraint: feasible sweep points
are tried in the objective's order until one keeps the benchmark within ``max_drop`` points of the base model (one
benchmark run per point tried: with a large ``limit`` and many feasible points that is the run's longest stage).

Under ``torchrun`` rank 0 runs lm-eval and the other processes wait for its result in one collective, which times out
after :data:`~steering_adapter.utils.distributed.DEFAULT_TIMEOUT`; keep ``limit`` small enough for that.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch

from steering_adapter.directions.conditions import ConditionFit
from steering_adapter.measure.benchmarks.harness import BenchmarkRequest, BenchmarkScore, run_benchmark
from steering_adapter.measure.sampling.backend import TransformersSampler
from steering_adapter.run.recipe import Recipe
from steering_adapter.run.selection.objective import SweepPoint, SweepResult, choose
from steering_adapter.run.stages.context import RunContext
from steering_adapter.run.stages.folders import fingerprint, gate_key, tensor_digest
from steering_adapter.utils import distributed
from steering_adapter.utils.records import atomic_write_json

__all__ = ["benchmark_choice", "benchmark_requests", "enforce_max_drop"]


def benchmark_requests(recipe: Recipe) -> list[BenchmarkRequest]:
    """One :class:`BenchmarkRequest` per task of the recipe's ``benchmarks`` section (empty: none)."""
    spec = recipe.benchmarks
    return [
        BenchmarkRequest(task, num_fewshot=spec.num_fewshot, limit=spec.limit, batch_size=spec.batch_size)
        for task in spec.tasks
    ]


def benchmark_choice(
    ctx: RunContext,
    vectors: dict[int, torch.Tensor],
    alpha: float,
    condition: ConditionFit | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Measure the recipe's benchmarks on the base model and the chosen adapter.

    Args:
        ctx: the run (its base model, without adapters, is what lm-eval scores).
        vectors: ``{block: [d] vector}`` of the chosen adapter.
        alpha: its scale.
        condition: its gate, or ``None`` (then ``ungated`` is the same adapter and is not measured twice).

    Returns:
        ``{task: {variant: BenchmarkScore dict}}`` for the variants the recipe names (``{}`` without tasks).
    """
    variants = list(ctx.recipe.benchmarks.variants)
    if condition is None and "ungated" in variants:
        variants.remove("ungated")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for request in benchmark_requests(ctx.recipe):
        results[request.task] = {
            variant: _measured(ctx, request, variant, vectors, alpha, condition if variant == "steered" else None)
            for variant in variants
        }
    return results


def enforce_max_drop(
    ctx: RunContext, sweep: SweepResult, directions: dict[int, torch.Tensor], condition: ConditionFit | None
) -> SweepResult:
    """The recipe's ``benchmarks.max_drop`` as a selection constraint on the sweep's choice.

    While the choice lowers a benchmark by more than ``max_drop`` points below the base model, it is marked
    infeasible (the violation names the task and the drop) and the objective chooses again among the other feasible
    points. Each point measured is kept in ``benchmarks/``.

    Returns:
        ``sweep``, its ``choice`` the first point that keeps every benchmark (``None`` when none does).
    """
    max_drop = ctx.recipe.benchmarks.max_drop
    if max_drop is None or not ctx.recipe.benchmarks.tasks:
        return sweep
    while sweep.choice is not None:
        point = sweep.choice
        vectors = {layer: directions[layer] for layer in point.layers}
        violations = []
        for request in benchmark_requests(ctx.recipe):
            base = _measured(ctx, request, "base", vectors, point.alpha, None)
            steered = _measured(ctx, request, "steered", vectors, point.alpha, condition if point.gated else None)
            drop = 100 * (base["accuracy"] - steered["accuracy"])
            ctx.log(f"[benchmarks] {_label(point)}: {request.task} {drop:+.1f} points below the base model")
            if drop > max_drop:
                violations.append(f"{request.task} {drop:.1f} points below base > max_drop {max_drop:g}")
        if not violations:
            break
        point.feasible = False
        point.violations.extend(violations)
        sweep.choice = choose(sweep.points, sweep.objective, sweep.near_tie, sweep.roles)
    return sweep


def _label(point: SweepPoint) -> str:
    return f"layers {point.layers}, α = {point.alpha:g}" + (", gated" if point.gated else "")


def _measured(
    ctx: RunContext,
    request: BenchmarkRequest,
    variant: str,
    vectors: dict[int, torch.Tensor],
    alpha: float,
    condition: ConditionFit | None,
) -> dict[str, Any]:
    """One variant's score, read from ``benchmarks/`` when this exact measurement was made before.

    Rank 0 decides (its folder holds the files) and measures; every process gets its result (one broadcast).
    """
    import lm_eval  # lazy: the optional benchmarks extra (checked before the model loads)

    settings = (request.task, request.num_fewshot, request.limit, request.batch_size, lm_eval.__version__)
    model = dataclasses.asdict(ctx.recipe.model)
    if variant == "base":
        key = fingerprint("base", model, settings)
    else:
        key = fingerprint(tensor_digest(vectors), alpha, gate_key(condition), model, settings)
    path = ctx.out / "benchmarks" / f"{request.task}-{variant}-{key}.json"

    def cached_or_measured() -> dict[str, Any]:
        if path.is_file():
            return json.loads(path.read_text())
        ctx.log(f"[benchmarks] {request.task} ({variant}) through lm-evaluation-harness")
        with ctx.times(f"benchmark {request.task} {variant}"):
            score = _run(ctx, request, variant, vectors, alpha, condition).to_dict()
        atomic_write_json(path, score)
        return score

    return distributed.from_main(cached_or_measured)


def _run(
    ctx: RunContext,
    request: BenchmarkRequest,
    variant: str,
    vectors: dict[int, torch.Tensor],
    alpha: float,
    condition: ConditionFit | None,
) -> BenchmarkScore:
    if variant == "base":
        return run_benchmark(ctx.model, ctx.tokenizer, request, progress=ctx.progress)
    sampler = TransformersSampler(ctx.model, ctx.tokenizer)
    gate = {"condition": condition.direction, **condition.config_fields()} if condition is not None else {}
    sampler.add_adapter("benchmark", vectors, scale=alpha, **gate)
    sampler.activate("benchmark")
    try:
        return run_benchmark(sampler.model, ctx.tokenizer, request, progress=ctx.progress)
    finally:
        sampler.remove_adapters()
