"""The layer / α sweep: every candidate measured on held-out prompts, α refined, the choice made, the table saved.

:func:`sweep_layers_and_scale` runs it (what it tries in a :class:`SweepSettings`, how each point is evaluated in an
:class:`~steering_adapter.measure.evaluation_settings.EvaluationSettings`) and returns a :class:`SweepResult`;
:func:`save_sweep` writes ``sweep.json``, ``sweep.csv`` and the Pareto plot (:func:`plot_pareto`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering_adapter.directions.conditions import ConditionFit
from steering_adapter.measure.evaluation import EvalSet, evaluate, gate_closed_prompts
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judges.base import Judge
from steering_adapter.measure.sampling.backend import Sampler, as_sampler
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.run.selection.objective import (
    SweepPoint,
    SweepResult,
    check_constraints,
    choose,
    objective_value,
    quality_limits,
)
from steering_adapter.run.selection.refinement import bracketed_minimum, refinement_bracket
from steering_adapter.run.selection.sweep_settings import SweepSettings
from steering_adapter.utils.records import atomic_write_json


def sweep_layers_and_scale(
    model: nn.Module | Sampler,
    tokenizer: Any,
    directions: Mapping[int, torch.Tensor],
    ranking: Sequence[int],
    sets: Sequence[EvalSet],
    judge: Judge,
    out_dir: str | os.PathLike,
    *,
    settings: SweepSettings | None = None,
    evaluation: EvaluationSettings | None = None,
    sampling: SamplingSettings | None = None,
    condition: ConditionFit | None = None,
) -> SweepResult:
    """Sweep the number of top-ranked layers and α on held-out prompts, refine α, and choose by the objective.

    Args:
        model: the base model (a transformers causal LM, no adapters), wrapped during the sweep and given back
            unchanged (``unload``) at the end; or a sampling backend without adapters
            (:class:`~steering_adapter.measure.sampling.backend.Sampler`, e.g. the vLLM one), whose candidates are
            removed at the end.
        tokenizer: its tokenizer.
        directions: ``{layer: v}`` for every layer that may be chosen (separation units for the default grids).
        ranking: layers best first (e.g. ``DirectionDiagnostics.best_layers()``); the top ``n`` are steered.
        sets: held-out prompt sets with roles; at least one ``"target"`` set.
        judge: the refusal judge.
        out_dir: run folder (``base/``, one folder per point, ``sweep.json``, ``sweep.csv``, ``pareto.png``).
        settings: the layer counts, the α grid, the refinement steps, the objective, the adapter mode and whether
            ungated variants are tried too (default :class:`SweepSettings` ``()``).
        evaluation: how each point is evaluated
            (:class:`~steering_adapter.measure.evaluation_settings.EvaluationSettings`): ``kl_prompts`` are the
            neutral prompts of the KL constraint (their base distributions are computed once; the base evaluation
            skips them), ``relevance`` is needed for the relevance floor; the points never write plots (the sweep
            writes its Pareto plot).
        sampling: how the judged answers are sampled
            (:class:`~steering_adapter.measure.sampling.settings.SamplingSettings`).
        condition: a fitted condition (:func:`~steering_adapter.directions.conditions.fit_condition`): every point is
            then tried both ungated and gated on it (gated points steer only the top-ranked layers at or after the
            condition block), and the choice says which won. The gated candidates' gate is decided once per prompt
            (it reads the base model's activations); the prompts it leaves alone keep their base answers at every
            gated point (a closed gate changes nothing) and only the others are sampled again
            (:attr:`SweepResult.gate_closed` counts them; backends without ``gate_decisions`` sample every prompt);
            where the ungated twin of a gated point (the same blocks and α) was measured, the prompts whose gate opens
            take the twin's answers (an open gate steers as the twin does), so that point samples nothing.

    Returns:
        The :class:`SweepResult`.

    Raises:
        ValueError: no target set, a ranked layer without a direction, layer counts beyond the ranked layers.
    """
    settings = settings if settings is not None else SweepSettings()
    evaluation = evaluation if evaluation is not None else EvaluationSettings()
    sampling = sampling if sampling is not None else SamplingSettings()
    objective, alphas = settings.objective, settings.alpha_grid()
    roles = {s.name: s.role for s in sets}
    if "target" not in roles.values():
        raise ValueError("the sweep needs at least one prompt set with role 'target'")
    ranking = [int(layer) for layer in ranking]
    missing = [layer for layer in ranking if layer not in directions]
    if missing:
        raise ValueError(f"ranked layers {missing} have no direction")
    counts = sorted({int(n) for n in settings.layer_counts})
    if counts[-1] > len(ranking):
        raise ValueError(
            f"layer_counts must be within 1..{len(ranking)} (ranked layers), got {list(settings.layer_counts)}"
        )
    out = Path(out_dir)
    point_evaluation = replace(evaluation, plots=False)
    base_evaluation = replace(point_evaluation, kl_prompts=None)

    variants = [False] if condition is None else ([False, True] if settings.include_ungated else [True])
    gated_ranking = [layer for layer in ranking if condition is not None and layer >= condition.layer]
    candidates: list[tuple[str, int, bool, list[int]]] = []
    sampler = as_sampler(model, tokenizer)
    for gated in variants:
        order = gated_ranking if gated else ranking
        for n in counts:
            if n > len(order):
                continue
            layers = order[:n]
            name = f"sweep_top{n}" + ("_gated" if gated else "")
            extra = condition.config_fields() if gated else {}
            sampler.add_adapter(
                name,
                {layer: directions[layer] for layer in layers},
                scale=1.0,
                mode=settings.mode,
                condition=condition.direction if gated else None,
                **extra,
            )
            candidates.append((name, n, gated, sorted(layers)))
    points: list[SweepPoint] = []
    try:
        base_report = evaluate(
            sampler,
            tokenizer,
            sets,
            judge,
            out / "base",
            settings=base_evaluation,
            sampling=sampling,
            conditions=("base",),
        )
        base = {name: row["base"]["refusal_pct"] for name, row in base_report.sets.items()}
        base_quality = {name: row["base"] for name, row in base_report.sets.items()}
        limits = quality_limits(base_quality, roles, objective)
        target_sizes = [row["base"]["n"] for row in base_report.sets.values() if row["role"] == "target"]
        near_tie = objective.near_tie if objective.near_tie is not None else 100.0 / max(1, min(target_sizes))
        measured: dict[tuple[str, float], SweepPoint] = {}
        gate_closed = _gate_closed_prompts(sampler, candidates, sets, evaluation.batch_size, sampling)

        def measure(candidate: tuple[str, int, bool, list[int]], alpha: float, refined: bool = False) -> SweepPoint:
            name, n, gated, layers = candidate
            alpha = float(round(alpha, 4))
            if (name, alpha) in measured:
                return measured[(name, alpha)]
            sampler.activate(name)
            sampler.set_scale(name, alpha)
            label = f"top{n}_alpha{alpha:g}" + ("_gated" if gated else "")
            reuse: dict[str, Any] = {}
            if gated and gate_closed:
                reuse = {"gate_closed": gate_closed, "base_run": out / "base"}
                twin = next((c for c in candidates if not c[2] and c[3] == layers), None)
                if twin is not None and (twin[0], alpha) in measured:  # the same blocks and α without the gate
                    reuse["ungated_run"] = out / measured[(twin[0], alpha)].label
            report = evaluate(
                sampler,
                tokenizer,
                sets,
                judge,
                out / label,
                settings=point_evaluation,
                sampling=sampling,
                conditions=("steered",),
                **reuse,
            )
            quality_keys = ("mean_relevance", "relevance_interval", "repetition", "degenerate_pct", "base_perplexity")
            point = SweepPoint(
                n_layers=n,
                layers=layers,
                alpha=alpha,
                refusal_pct={name: row["steered"]["refusal_pct"] for name, row in report.sets.items()},
                relevance={
                    name: row["steered"]["mean_relevance"]
                    for name, row in report.sets.items()
                    if "mean_relevance" in row["steered"]
                },
                kl=report.kl["mean_kl"] if report.kl else None,
                label=label,
                gated=gated,
                quality={
                    name: {k: row["steered"][k] for k in quality_keys if k in row["steered"]}
                    for name, row in report.sets.items()
                },
                refined=refined,
            )
            targets = [point.refusal_pct[name] for name, role in roles.items() if role == "target"]
            point.target_refusal_pct = float(sum(targets) / len(targets))
            point.violations = check_constraints(point, base, roles, objective, limits)
            point.feasible = not point.violations
            measured[(candidate[0], alpha)] = point
            points.append(point)
            return point

        for candidate in candidates:
            for alpha in alphas:
                measure(candidate, alpha)
        grid_choice = choose(points, objective, near_tie, roles)
        if grid_choice is not None and settings.refine_steps:
            candidate = next(c for c in candidates if (c[1], c[2]) == (grid_choice.n_layers, grid_choice.gated))
            sign = math.copysign(1.0, grid_choice.alpha)
            same_sign = [a for a in alphas if math.copysign(1.0, a) == sign]
            low, high = refinement_bracket(same_sign, grid_choice.alpha)
            bracketed_minimum(
                lambda t: objective_value(measure(candidate, sign * t, refined=True), objective),
                low,
                abs(grid_choice.alpha),
                high,
                objective_value(grid_choice, objective),
                settings.refine_steps,
            )
    finally:
        sampler.remove_adapters()
    result = SweepResult(
        objective,
        base,
        roles,
        points,
        choose(points, objective, near_tie, roles),
        ranking,
        condition=condition.metadata() if condition is not None else None,
        quality_limits=limits,
        base_quality=base_quality,
        near_tie=near_tie,
        gate_closed={name: sum(flags) for name, flags in gate_closed.items()},
    )
    save_sweep(result, out)
    return result


def _gate_closed_prompts(
    sampler: Sampler,
    candidates: Sequence[tuple[str, int, bool, list[int]]],
    sets: Sequence[EvalSet],
    batch_size: int,
    sampling: SamplingSettings,
) -> dict[str, list[bool]]:
    """``{set name: [B] bool}``: the prompts the gate of the gated candidates leaves alone (``{}`` when no candidate
    is gated or the backend cannot tell).

    Every gated candidate shares one condition and steers only blocks from the condition block on, so its gate reads
    the base model's activations: the decisions hold for every candidate and every α."""
    gated = next((c for c in candidates if c[2]), None)
    if gated is None:
        return {}
    sampler.activate(gated[0])
    return gate_closed_prompts(sampler, None, gated[0], sets, batch_size=batch_size, sampling=sampling)


def save_sweep(result: SweepResult, out_dir: str | os.PathLike) -> None:
    """Write ``sweep.json``, ``sweep.csv`` and ``pareto.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", result.to_dict())
    names = list(result.roles)
    quality_names = list(result.quality_limits)
    with open(out / "sweep.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["label", "gated", "n_layers", "layers", "alpha", "refined", "kl", "feasible", "chosen"]
            + [f"refusal_pct:{n}" for n in names]
            + [f"{key}:{n}" for n in quality_names for key in ("relevance", "relevance_ci", "repetition", "base_ppl")]
            + ["violations"]
        )

        def quality_cells(quality: Mapping[str, Mapping[str, Any]]) -> list[Any]:
            cells: list[Any] = []
            for n in quality_names:
                entry = quality.get(n, {})
                interval = entry.get("relevance_interval")
                ci = f"{interval[0]:.3f}..{interval[1]:.3f}" if interval else ""
                cells += [
                    entry.get("mean_relevance", ""),
                    ci,
                    entry.get("repetition", ""),
                    entry.get("base_perplexity", ""),
                ]
            return cells

        writer.writerow(
            ["base", "", 0, "", 0.0, "", 0.0, "", ""]
            + [result.base_refusal_pct[n] for n in names]
            + quality_cells(result.base_quality)
            + [""]
        )
        for point in result.points:
            writer.writerow(
                [
                    point.label,
                    point.gated,
                    point.n_layers,
                    " ".join(map(str, point.layers)),
                    point.alpha,
                    point.refined,
                    point.kl,
                    point.feasible,
                    point is result.choice,
                ]
                + [point.refusal_pct[n] for n in names]
                + quality_cells(point.quality)
                + ["; ".join(point.violations)]
            )
    plot_pareto(result, out / "pareto.png")


def plot_pareto(result: SweepResult, path: str | os.PathLike) -> str:
    """Target refusal rate against KL for every point; feasible points filled, the choice starred (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, only the plot needs it
    from matplotlib.figure import Figure  # lazy: slow import, only the plot needs it

    figure = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for point in result.points:
        kl = point.kl if point.kl is not None else 0.0
        axes.scatter(
            [kl],
            [point.target_refusal_pct],
            marker="o",
            s=40,
            facecolors="tab:green" if point.feasible else "none",
            edgecolors="tab:green" if point.feasible else "tab:red",
        )
        axes.annotate(
            point.label, (kl, point.target_refusal_pct), fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    if result.choice is not None:
        kl = result.choice.kl if result.choice.kl is not None else 0.0
        axes.scatter(
            [kl],
            [result.choice.target_refusal_pct],
            marker="*",
            s=220,
            color="gold",
            edgecolors="black",
            label="chosen",
            zorder=5,
        )
    targets = [result.base_refusal_pct[n] for n, r in result.roles.items() if r == "target"]
    axes.axhline(sum(targets) / len(targets), color="grey", linestyle="--", linewidth=1, label="base")
    axes.set_xlabel("mean KL(base ‖ steered) on neutral prompts")
    axes.set_ylabel("target refusal %")
    axes.set_title(f"α / layer sweep ({result.objective.goal}); filled = feasible")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return str(path)
