"""Automatic choice of the steered layers and the scale α by an explicit objective (``docs/method.md`` §5).

Layers are ranked first (|Pearson r| of the projection with c(x), then ROC AUC: see
:meth:`~steering_adapter.diagnostics.DirectionDiagnostics.best_layers`). The sweep then tries the top ``n`` layers
for each ``n`` in ``layer_counts`` and each ``α`` in ``alphas`` on held-out prompts, evaluates each point with
:func:`~steering_adapter.evaluation.evaluate` (resumable), and picks by a three-way trade-off:

- ``goal="remove"``: lowest refusal rate on the target sets, subject to harmful refusals ≥ base − δ, benign false
  refusals ≤ base + δ, every "other" set within ±δ, and KL ≤ budget;
- ``goal="induce"``: highest refusal rate on the target sets, subject to every non-target set within ±δ and KL ≤
  budget.

Ties go to the smaller KL, then the smaller |α|, then fewer layers. The table is saved as JSON and CSV with a Pareto
plot, and :meth:`SweepResult.metadata` is what the adapter records in ``steering_metadata["selection"]``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .conditions import ConditionFit
from .evaluation import EvalSet, evaluate
from .judges.base import Judge
from .records import atomic_write_json
from .samplers import Sampler, as_sampler

GOALS = ("remove", "induce")


@dataclass
class SelectionObjective:
    """What the sweep optimises and the constraints it respects.

    Args:
        goal: ``"remove"`` target refusals (α < 0 for refusal vectors) or ``"induce"`` them (α > 0).
        delta: allowed change of the constrained sets, in percentage points.
        kl_budget: maximum mean KL(base ‖ steered) on the neutral prompts (``None``: unconstrained).
        min_relevance: minimum mean prompt/answer relevance on the target sets (``None``: unconstrained); guards
            against "compliance" that drifts off topic.
    """

    goal: str = "remove"
    delta: float = 5.0
    kl_budget: float | None = 0.5
    min_relevance: float | None = None

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise ValueError(f"unknown selection goal {self.goal!r}; expected one of {GOALS}")
        if not self.delta >= 0:
            raise ValueError(f"delta must be >= 0 percentage points, got {self.delta}")
        if self.kl_budget is not None and not self.kl_budget > 0:
            raise ValueError(f"kl_budget must be > 0 or None, got {self.kl_budget}")


@dataclass
class SweepPoint:
    """One (layers, α) candidate and its held-out measurements."""

    n_layers: int
    layers: list[int]
    alpha: float
    refusal_pct: dict[str, float]
    relevance: dict[str, float] = field(default_factory=dict)
    kl: float | None = None
    target_refusal_pct: float = float("nan")
    feasible: bool = False
    violations: list[str] = field(default_factory=list)
    label: str = ""
    gated: bool = False


@dataclass
class SweepResult:
    """The whole sweep: base rates, every point, the objective and the choice (``None`` if nothing is feasible)."""

    objective: SelectionObjective
    base_refusal_pct: dict[str, float]
    roles: dict[str, str]
    points: list[SweepPoint]
    choice: SweepPoint | None
    ranking: list[int]
    condition: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metadata(self) -> dict[str, Any]:
        """The record of the choice stored in the adapter's ``steering_metadata["selection"]``."""
        chosen = None
        if self.choice is not None:
            keep = ("layers", "alpha", "refusal_pct", "kl", "gated")
            chosen = {k: v for k, v in asdict(self.choice).items() if k in keep}
        return {
            "objective": asdict(self.objective),
            "layer_ranking": self.ranking,
            "base_refusal_pct": self.base_refusal_pct,
            "roles": self.roles,
            "chosen": chosen,
            "n_points": len(self.points),
            "n_feasible": sum(point.feasible for point in self.points),
            "condition": self.condition,
        }


def check_constraints(
    point: SweepPoint, base: Mapping[str, float], roles: Mapping[str, str], objective: SelectionObjective
) -> list[str]:
    """The constraints ``point`` violates (empty when feasible)."""
    violations = []
    for name, role in roles.items():
        after, before = point.refusal_pct[name], base[name]
        if math.isnan(after) or math.isnan(before):
            violations.append(f"{name}: no judged prompts")
            continue
        if role == "target":
            if objective.min_relevance is not None and point.relevance.get(name, math.inf) < objective.min_relevance:
                violations.append(
                    f"{name}: relevance {point.relevance[name]:.3f} < {objective.min_relevance} (answers off topic)"
                )
            continue
        if objective.goal == "remove" and role == "harmful":
            if after < before - objective.delta:
                violations.append(f"{name}: harmful refusals {after:.1f}% < base {before:.1f}% − {objective.delta}")
        elif objective.goal == "remove" and role == "benign":
            if after > before + objective.delta:
                violations.append(f"{name}: false refusals {after:.1f}% > base {before:.1f}% + {objective.delta}")
        elif abs(after - before) > objective.delta:
            violations.append(f"{name}: refusals moved {after - before:+.1f} points (> ±{objective.delta})")
    if objective.kl_budget is not None and point.kl is not None and point.kl > objective.kl_budget:
        violations.append(f"KL {point.kl:.4f} > budget {objective.kl_budget}")
    return violations


def choose(points: Sequence[SweepPoint], objective: SelectionObjective) -> SweepPoint | None:
    """The best feasible point (see the module docstring for the order), or ``None``."""
    feasible = [point for point in points if point.feasible and not math.isnan(point.target_refusal_pct)]
    if not feasible:
        return None
    sign = 1.0 if objective.goal == "remove" else -1.0

    def key(point: SweepPoint) -> tuple[float, float, float, int]:
        kl = point.kl if point.kl is not None else 0.0
        return (sign * point.target_refusal_pct, kl, abs(point.alpha), point.n_layers)

    return min(feasible, key=key)


def sweep_layers_and_scale(
    model: nn.Module | Sampler,
    tokenizer: Any,
    directions: Mapping[int, torch.Tensor],
    ranking: Sequence[int],
    sets: Sequence[EvalSet],
    judge: Judge,
    out_dir: str | os.PathLike,
    *,
    layer_counts: Sequence[int] = (1, 2, 4),
    alphas: Sequence[float] = (-1.0, -2.0, -4.0),
    objective: SelectionObjective | None = None,
    kl_prompts: Sequence[str] | None = None,
    relevance: Any | None = None,
    mode: str = "add",
    condition: ConditionFit | None = None,
    include_ungated: bool = True,
    batch_size: int = 8,
    progress: bool = True,
    **sampling: Any,
) -> SweepResult:
    """Sweep the number of top-ranked layers and α on held-out prompts, and choose by ``objective``.

    Args:
        model: the base model (a transformers causal LM, no adapters), wrapped during the sweep and given back
            unchanged (``unload``) at the end; or a sampling backend without adapters
            (:class:`~steering_adapter.samplers.Sampler`, e.g. the vLLM one), whose candidates are removed at the end.
        tokenizer: its tokenizer.
        directions: ``{layer: v}`` for every layer that may be chosen.
        ranking: layers best first (e.g. ``DirectionDiagnostics.best_layers()``); the top ``n`` are steered.
        sets: held-out prompt sets with roles; at least one ``"target"`` set.
        judge: the refusal judge.
        out_dir: run folder (``base/``, one folder per point, ``sweep.json``, ``sweep.csv``, ``pareto.png``).
        layer_counts: numbers of top layers to try.
        alphas: scales to try.
        objective: the :class:`SelectionObjective` (default: remove, δ = 5 points, KL ≤ 0.5).
        kl_prompts: neutral prompts for the KL constraint.
        relevance: optional :class:`~steering_adapter.relevance.RelevanceScorer`.
        mode: adapter mode (``"add"``).
        condition: a fitted condition (:func:`~steering_adapter.conditions.fit_condition`): every point is then
            tried both ungated and gated on it (gated points steer only the top-ranked layers at or after the
            condition block), and the choice says which won.
        include_ungated: with a condition, also try ungated variants (``False``: gated only).
        **sampling: sampling settings for the judged answers.

    Returns:
        The :class:`SweepResult`.
    """
    objective = objective or SelectionObjective()
    roles = {s.name: s.role for s in sets}
    if "target" not in roles.values():
        raise ValueError("the sweep needs at least one prompt set with role 'target'")
    ranking = [int(layer) for layer in ranking]
    missing = [layer for layer in ranking if layer not in directions]
    if missing:
        raise ValueError(f"ranked layers {missing} have no direction")
    counts = sorted({int(n) for n in layer_counts})
    if not counts or counts[0] < 1 or counts[-1] > len(ranking):
        raise ValueError(f"layer_counts must be within 1..{len(ranking)} (ranked layers), got {list(layer_counts)}")
    if not alphas:
        raise ValueError("alphas is empty")
    out = Path(out_dir)
    common = dict(judge=judge, batch_size=batch_size, progress=progress, relevance=relevance, plots=False)

    variants = [False] if condition is None else ([False, True] if include_ungated else [True])
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
                mode=mode,
                condition=condition.direction if gated else None,
                **extra,
            )
            candidates.append((name, n, gated, sorted(layers)))
    try:
        base_report = evaluate(
            sampler, tokenizer, sets, out_dir=out / "base", conditions=("base",), **common, **sampling
        )
        base = {name: row["base"]["refusal_pct"] for name, row in base_report.sets.items()}
        points = []
        for name, n, gated, layers in candidates:
            sampler.activate(name)
            for alpha in alphas:
                sampler.set_scale(name, alpha)
                label = f"top{n}_alpha{alpha:g}" + ("_gated" if gated else "")
                report = evaluate(
                    sampler,
                    tokenizer,
                    sets,
                    out_dir=out / label,
                    conditions=("steered",),
                    kl_prompts=kl_prompts,
                    **common,
                    **sampling,
                )
                point = SweepPoint(
                    n_layers=n,
                    layers=layers,
                    alpha=float(alpha),
                    refusal_pct={name: row["steered"]["refusal_pct"] for name, row in report.sets.items()},
                    relevance={
                        name: row["steered"]["mean_relevance"]
                        for name, row in report.sets.items()
                        if "mean_relevance" in row["steered"]
                    },
                    kl=report.kl["mean_kl"] if report.kl else None,
                    label=label,
                    gated=gated,
                )
                targets = [point.refusal_pct[name] for name, role in roles.items() if role == "target"]
                point.target_refusal_pct = float(sum(targets) / len(targets))
                point.violations = check_constraints(point, base, roles, objective)
                point.feasible = not point.violations
                points.append(point)
    finally:
        sampler.remove_adapters()
    result = SweepResult(
        objective,
        base,
        roles,
        points,
        choose(points, objective),
        ranking,
        condition=condition.metadata() if condition is not None else None,
    )
    save_sweep(result, out)
    return result


def save_sweep(result: SweepResult, out_dir: str | os.PathLike) -> None:
    """Write ``sweep.json``, ``sweep.csv`` and ``pareto.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", result.to_dict())
    names = list(result.roles)
    with open(out / "sweep.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["label", "gated", "n_layers", "layers", "alpha", "kl", "feasible", "chosen"]
            + [f"refusal_pct:{n}" for n in names]
            + ["violations"]
        )
        writer.writerow(["base", "", 0, "", 0.0, 0.0, "", ""] + [result.base_refusal_pct[n] for n in names] + [""])
        for point in result.points:
            writer.writerow(
                [
                    point.label,
                    point.gated,
                    point.n_layers,
                    " ".join(map(str, point.layers)),
                    point.alpha,
                    point.kl,
                    point.feasible,
                    point is result.choice,
                ]
                + [point.refusal_pct[n] for n in names]
                + ["; ".join(point.violations)]
            )
    plot_pareto(result, out / "pareto.png")


def plot_pareto(result: SweepResult, path: str | os.PathLike) -> str:
    """Target refusal rate against KL for every point; feasible points filled, the choice starred (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
