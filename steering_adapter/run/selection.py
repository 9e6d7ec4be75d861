"""Automatic choice of the steered layers and the scale α by an explicit objective (``docs/method.md`` §5).

Layers are ranked first (|Pearson r| of the projection with c(x), then ROC AUC: see
:meth:`~steering_adapter.directions.diagnostics.DirectionDiagnostics.best_layers`). The sweep then tries the top ``n``
layers
for each ``n`` in ``layer_counts`` and each ``α`` of a grid in separation units (default ``−0.5, −1, −2, −4, −8`` to
remove, the same positive to induce: α = −1 moves the refused prompts' mean onto the complied prompts' mean along the
direction), evaluates each point
with :func:`~steering_adapter.measure.evaluation.evaluate` on held-out prompts (resumable; base answers and the base
side of
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
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering_adapter.directions.conditions import ConditionFit
from steering_adapter.measure.evaluation import EvalSet, evaluate
from steering_adapter.measure.judges.base import Judge
from steering_adapter.measure.sampling.backend import Sampler, as_sampler
from steering_adapter.utils.records import atomic_write_json

GOALS = ("remove", "induce")
GOLDEN = 0.3819660112501051  # 2 − φ: where a golden-section step probes the larger side of a bracket
# Geometric, a factor 2 apart: a mean-difference vector often works near |α| = 1, a ridge vector — whose unit direction
# carries only part of the mean difference — may need several times more (measured: the organism's RMD near −5).
DEFAULT_ALPHAS = {"remove": (-0.5, -1.0, -2.0, -4.0, -8.0), "induce": (0.5, 1.0, 2.0, 4.0, 8.0)}


def default_alphas(goal: str) -> tuple[float, ...]:
    """The default α grid in separation units (``vector_units: class_separation``): α = ∓1 moves the refused prompts'
    mean onto the complied prompts' mean along the direction, on any model."""
    if goal not in GOALS:
        raise ValueError(f"unknown selection goal {goal!r}; expected one of {GOALS}")
    return DEFAULT_ALPHAS[goal]


@dataclass
class SelectionObjective:
    """What the sweep optimises and the constraints it respects.

    Answer-quality constraints apply to the sets whose answers are meant to be answers: the target sets when
    removing refusals, the benign and "other" sets when inducing them. A constraint set to ``None`` is off; one whose
    measure was not taken (no relevance scorer) is skipped.

    Args:
        goal: ``"remove"`` target refusals (α < 0 for refusal vectors) or ``"induce"`` them (α > 0).
        delta: allowed change of the constrained sets, in percentage points.
        kl_budget: maximum mean KL(base ‖ steered) on the neutral prompts (``None``: unconstrained).
        min_relevance: absolute floor on the mean prompt/answer relevance (MiniLM cosine) of those answers.
        relevance_ratio: relative floor: the relevance must also reach this fraction of the base model's relevance
            on benign answers (``remove``; the target sets' base answers are refusals) or of the same set's base
            relevance (``induce``). The floor is the larger of the two; with ``induce`` it never exceeds the set's
            own base relevance (nor the repetition ceiling falls below its base repetition): a set whose base answers
            already sit below the absolute floor is judged on what steering changes, not on what it was.
        max_repetition: ceiling on the mean share of repeated token 3-grams per answer (looping output).
        max_perplexity_ratio: ceiling on the median perplexity of the answers under the base model, relative to the
            base model's own answers (benign sets for ``remove``, the same set for ``induce``): garbled text that the
            base model would never write.
        near_tie: points whose target refusal rate is within this many percentage points of the best count as tied
            and the smallest |α|, then the lowest KL, then the fewest layers wins (``None``: one prompt of the
            smallest target set).
    """

    goal: str = "remove"
    delta: float = 5.0
    kl_budget: float | None = 0.5
    min_relevance: float | None = 0.2
    relevance_ratio: float | None = 0.8
    max_repetition: float | None = 0.35
    max_perplexity_ratio: float | None = 10.0
    near_tie: float | None = None

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise ValueError(f"unknown selection goal {self.goal!r}; expected one of {GOALS}")
        if not self.delta >= 0:
            raise ValueError(f"delta must be >= 0 percentage points, got {self.delta}")
        if self.kl_budget is not None and not self.kl_budget > 0:
            raise ValueError(f"kl_budget must be > 0 or None, got {self.kl_budget}")
        for name in ("relevance_ratio", "max_repetition", "max_perplexity_ratio"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if self.near_tie is not None and not self.near_tie >= 0:
            raise ValueError(f"near_tie must be >= 0 percentage points or None, got {self.near_tie}")

    def quality_sets(self, roles: Mapping[str, str]) -> list[str]:
        """The sets whose answers must stay answers (see the class docstring)."""
        wanted = ("target",) if self.goal == "remove" else ("benign", "other")
        return [name for name, role in roles.items() if role in wanted]


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
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    refined: bool = False


@dataclass
class SweepResult:
    """The whole sweep: base rates, every point, the objective and the choice (``None`` if nothing is feasible).

    ``gate_closed`` counts, per set, the prompts whose base answers the gated points reused (their gate is closed).
    """

    objective: SelectionObjective
    base_refusal_pct: dict[str, float]
    roles: dict[str, str]
    points: list[SweepPoint]
    choice: SweepPoint | None
    ranking: list[int]
    condition: dict[str, Any] | None = None
    quality_limits: dict[str, dict[str, float]] = field(default_factory=dict)
    base_quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    near_tie: float = 0.0
    gate_closed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metadata(self) -> dict[str, Any]:
        """The record of the choice stored in the adapter's ``steering_metadata["selection"]``."""
        chosen = None
        if self.choice is not None:
            keep = ("layers", "alpha", "refusal_pct", "kl", "gated", "quality", "refined")
            chosen = {k: v for k, v in asdict(self.choice).items() if k in keep}
        return {
            "objective": asdict(self.objective),
            "layer_ranking": self.ranking,
            "base_refusal_pct": self.base_refusal_pct,
            "roles": self.roles,
            "chosen": chosen,
            "n_points": len(self.points),
            "n_feasible": sum(point.feasible for point in self.points),
            "quality_limits": self.quality_limits,
            "near_tie": self.near_tie,
            "condition": self.condition,
        }


def steering_candidates(ranking: Sequence[int], depth: int, min_depth_fraction: float | None) -> list[int]:
    """The ranked blocks the sweep may steer: those at or after ``min_depth_fraction`` of the decoder's depth.

    Prompt-level topic features separate refused from complied prompts from the first blocks on (on the censored
    SmolLM2 |r| is 0.73 at block 0 and 0.72 at block 22), so a ranking by |r| alone can put early blocks first;
    steering there moves the topic, not the refusal decision (measured there: the top-4 early blocks at α = −4 took
    political refusals 87.5 → 66.7 %, where late blocks removed most of them at α = −2).

    Args:
        ranking: blocks best first.
        depth: number of decoder blocks.
        min_depth_fraction: ``0.5`` keeps the second half; ``None`` keeps every block.

    Returns:
        ``ranking`` without the blocks before ``floor(min_depth_fraction · depth)``, order kept.

    Raises:
        ValueError: no ranked block is deep enough.
    """
    if min_depth_fraction is None:
        return [int(layer) for layer in ranking]
    if not 0 <= min_depth_fraction < 1:
        raise ValueError(f"min_depth_fraction must be in [0, 1), got {min_depth_fraction}")
    first = math.floor(min_depth_fraction * depth)
    kept = [int(layer) for layer in ranking if layer >= first]
    if not kept:
        raise ValueError(f"no ranked block at or after block {first} ({min_depth_fraction} of {depth} blocks)")
    return kept


def quality_limits(
    base_quality: Mapping[str, Mapping[str, Any]], roles: Mapping[str, str], objective: SelectionObjective
) -> dict[str, dict[str, float]]:
    """Per quality set (:meth:`SelectionObjective.quality_sets`): the relevance floor, the repetition ceiling and the
    base-perplexity ceiling implied by ``objective`` and the base model's own answers.

    Args:
        base_quality: per set, the base condition's evaluation summary (``mean_relevance``, ``base_perplexity``).
        roles: set name → role.
        objective: the objective.

    Returns:
        ``{set: {"min_relevance": ..., "max_repetition": ..., "max_perplexity": ...}}`` with only the limits that
        apply (a relative limit needs the base measure it is relative to).
    """

    def mean_of(names: Sequence[str], key: str) -> float | None:
        values = [base_quality[n].get(key) for n in names if n in base_quality]
        values = [v for v in values if v is not None and math.isfinite(v)]
        return sum(values) / len(values) if values else None

    benign = [name for name, role in roles.items() if role == "benign"]
    limits: dict[str, dict[str, float]] = {}
    for name in objective.quality_sets(roles):
        reference = benign if objective.goal == "remove" else [name]
        entry: dict[str, float] = {}
        floors = []
        if objective.min_relevance is not None:
            floors.append(objective.min_relevance)
        ref_relevance = mean_of(reference, "mean_relevance")
        if objective.relevance_ratio is not None and ref_relevance is not None:
            floors.append(objective.relevance_ratio * ref_relevance)
        same_set = reference == [name]
        if floors:
            entry["min_relevance"] = max(floors)
            if same_set and ref_relevance is not None:
                # a limit judges what steering did: never ask more of a set than its own base answers reach
                entry["min_relevance"] = min(entry["min_relevance"], ref_relevance)
        if objective.max_repetition is not None:
            entry["max_repetition"] = objective.max_repetition
            ref_repetition = mean_of(reference, "repetition") if same_set else None
            if ref_repetition is not None:
                entry["max_repetition"] = max(entry["max_repetition"], ref_repetition)
        ref_perplexity = mean_of(reference, "base_perplexity")
        if objective.max_perplexity_ratio is not None and ref_perplexity is not None:
            entry["max_perplexity"] = objective.max_perplexity_ratio * ref_perplexity
        limits[name] = entry
    return limits


def check_constraints(
    point: SweepPoint,
    base: Mapping[str, float],
    roles: Mapping[str, str],
    objective: SelectionObjective,
    limits: Mapping[str, Mapping[str, float]] | None = None,
) -> list[str]:
    """The constraints ``point`` violates (empty when feasible).

    Args:
        point: the measured point.
        base: base refusal rate per set.
        roles: set name → role.
        objective: the objective.
        limits: answer-quality limits per set (:func:`quality_limits`); without them, ``objective.min_relevance``
            alone is checked on the quality sets.
    """
    violations = []
    if limits is None:
        limits = {
            name: {"min_relevance": objective.min_relevance}
            for name in objective.quality_sets(roles)
            if objective.min_relevance is not None
        }
    for name, role in roles.items():
        after, before = point.refusal_pct[name], base[name]
        if math.isnan(after) or math.isnan(before):
            violations.append(f"{name}: no judged prompts")
            continue
        if role == "target":
            continue
        if objective.goal == "remove" and role == "harmful":
            if after < before - objective.delta:
                violations.append(f"{name}: harmful refusals {after:.1f}% < base {before:.1f}% − {objective.delta}")
        elif objective.goal == "remove" and role == "benign":
            if after > before + objective.delta:
                violations.append(f"{name}: false refusals {after:.1f}% > base {before:.1f}% + {objective.delta}")
        elif abs(after - before) > objective.delta:
            violations.append(f"{name}: refusals moved {after - before:+.1f} points (> ±{objective.delta})")
    for name, limit in limits.items():
        measured = {**point.quality.get(name, {})}
        if name in point.relevance:
            measured.setdefault("mean_relevance", point.relevance[name])
        relevance = measured.get("mean_relevance")
        if "min_relevance" in limit and relevance is not None and relevance < limit["min_relevance"]:
            violations.append(f"{name}: relevance {relevance:.3f} < {limit['min_relevance']:.3g} (answers off topic)")
        repetition = measured.get("repetition")
        if "max_repetition" in limit and repetition is not None and repetition > limit["max_repetition"]:
            violations.append(f"{name}: repetition {repetition:.3f} > {limit['max_repetition']:.3g} (looping)")
        perplexity = measured.get("base_perplexity")
        if "max_perplexity" in limit and perplexity is not None and perplexity > limit["max_perplexity"]:
            violations.append(
                f"{name}: base-model perplexity {perplexity:.1f} > {limit['max_perplexity']:.1f} (degenerate answers)"
            )
    if objective.kl_budget is not None and point.kl is not None and point.kl > objective.kl_budget:
        violations.append(f"KL {point.kl:.4f} > budget {objective.kl_budget}")
    return violations


def choose(points: Sequence[SweepPoint], objective: SelectionObjective, near_tie: float = 0.0) -> SweepPoint | None:
    """The best feasible point, or ``None``.

    The best target refusal rate (lowest for ``remove``, highest for ``induce``) wins; every feasible point within
    ``near_tie`` percentage points of it counts as tied, and among those the smallest |α|, then the lowest KL, then the
    fewest layers wins.
    """
    feasible = [point for point in points if point.feasible and not math.isnan(point.target_refusal_pct)]
    if not feasible:
        return None
    sign = 1.0 if objective.goal == "remove" else -1.0
    best = min(sign * point.target_refusal_pct for point in feasible)
    tied = [point for point in feasible if sign * point.target_refusal_pct <= best + near_tie + 1e-9]

    def key(point: SweepPoint) -> tuple[float, float, int, float]:
        kl = point.kl if point.kl is not None else 0.0
        return (abs(point.alpha), kl, point.n_layers, sign * point.target_refusal_pct)

    return min(tied, key=key)


def objective_value(point: SweepPoint, objective: SelectionObjective) -> float:
    """A scalar to minimise along α: the signed target refusal rate for feasible points (with a small preference for
    smaller |α| and KL), and a large penalty growing with the number of violations for infeasible ones."""
    if not point.feasible or math.isnan(point.target_refusal_pct):
        return 1e4 + len(point.violations)
    sign = 1.0 if objective.goal == "remove" else -1.0
    kl = point.kl if point.kl is not None else 0.0
    return sign * point.target_refusal_pct + 1e-3 * abs(point.alpha) + 1e-4 * kl


def bracketed_minimum(
    f: Callable[[float], float], low: float, best: float, high: float, f_best: float, steps: int
) -> tuple[float, float]:
    """Golden-section search for a minimum of ``f`` inside ``[low, high]``, starting from a known interior point.

    Each step evaluates ``f`` once, at the golden section of the larger side of the current bracket, and keeps the
    better point inside a shrinking bracket (ties keep the current point).

    Args:
        f: the function (e.g. :func:`objective_value` of a sweep point at α = sign·t).
        low, best, high: the bracket, ``low < best < high``.
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
    alphas: Sequence[float] | None = None,
    refine_steps: int = 3,
    objective: SelectionObjective | None = None,
    kl_prompts: Sequence[str] | None = None,
    kl_tokens: int | None = 16,
    relevance: Any | None = None,
    mode: str = "add",
    condition: ConditionFit | None = None,
    include_ungated: bool = True,
    batch_size: int = 8,
    progress: bool = True,
    **sampling: Any,
) -> SweepResult:
    """Sweep the number of top-ranked layers and α on held-out prompts, refine α, and choose by ``objective``.

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
        layer_counts: numbers of top layers to try.
        alphas: scales to try (default :func:`default_alphas` of the goal).
        refine_steps: after the grid, golden-section evaluations of α around the best feasible grid point of the
            chosen variant, between its grid neighbours of the same sign (``0``: the grid only).
        objective: the :class:`SelectionObjective` (default: remove, δ = 5 points, KL ≤ 0.5, quality floors on).
        kl_prompts: neutral prompts for the KL constraint (their base distributions are computed once).
        kl_tokens: positions per KL prompt (see :class:`~steering_adapter.measure.likelihood.NextTokenKL`).
        relevance: optional :class:`~steering_adapter.measure.relevance.RelevanceScorer` (needed for the relevance
        floor).
        mode: adapter mode (``"add"``).
        condition: a fitted condition (:func:`~steering_adapter.directions.conditions.fit_condition`): every point is
            then
            tried both ungated and gated on it (gated points steer only the top-ranked layers at or after the
            condition block), and the choice says which won. The gated candidates' gate is decided once per prompt
            (it reads the base model's activations); the prompts it leaves alone keep their base answers at every
            gated point (a closed gate changes nothing) and only the others are sampled again
            (:attr:`SweepResult.gate_closed` counts them; backends without ``gate_decisions`` sample every prompt).
        include_ungated: with a condition, also try ungated variants (``False``: gated only).
        **sampling: sampling settings for the judged answers.

    Returns:
        The :class:`SweepResult`.
    """
    objective = objective or SelectionObjective()
    alphas = tuple(default_alphas(objective.goal) if alphas is None else alphas)
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
    if any(a == 0 for a in alphas):
        raise ValueError(f"alphas must be non-zero, got {list(alphas)}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
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
    points: list[SweepPoint] = []
    try:
        base_report = evaluate(
            sampler, tokenizer, sets, out_dir=out / "base", conditions=("base",), **common, **sampling
        )
        base = {name: row["base"]["refusal_pct"] for name, row in base_report.sets.items()}
        base_quality = {name: row["base"] for name, row in base_report.sets.items()}
        limits = quality_limits(base_quality, roles, objective)
        target_sizes = [row["base"]["n"] for row in base_report.sets.values() if row["role"] == "target"]
        near_tie = objective.near_tie if objective.near_tie is not None else 100.0 / max(1, min(target_sizes))
        measured: dict[tuple[str, float], SweepPoint] = {}
        gate_closed = _gate_closed_prompts(sampler, candidates, sets, batch_size, sampling)

        def measure(candidate: tuple[str, int, bool, list[int]], alpha: float, refined: bool = False) -> SweepPoint:
            name, n, gated, layers = candidate
            alpha = float(round(alpha, 4))
            if (name, alpha) in measured:
                return measured[(name, alpha)]
            sampler.activate(name)
            sampler.set_scale(name, alpha)
            label = f"top{n}_alpha{alpha:g}" + ("_gated" if gated else "")
            reuse = {"gate_closed": gate_closed, "base_run": out / "base"} if gated and gate_closed else {}
            report = evaluate(
                sampler,
                tokenizer,
                sets,
                out_dir=out / label,
                conditions=("steered",),
                kl_prompts=kl_prompts,
                kl_tokens=kl_tokens,
                **reuse,
                **common,
                **sampling,
            )
            quality_keys = ("mean_relevance", "relevance_interval", "repetition", "base_perplexity")
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
        grid_choice = choose(points, objective, near_tie)
        if grid_choice is not None and refine_steps:
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
                refine_steps,
            )
    finally:
        sampler.remove_adapters()
    result = SweepResult(
        objective,
        base,
        roles,
        points,
        choose(points, objective, near_tie),
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
    sampling: Mapping[str, Any],
) -> dict[str, list[bool]]:
    """``{set name: [B] bool}``: the prompts the gate of the gated candidates leaves alone (``{}`` when no candidate
    is gated or the backend cannot tell).

    Every gated candidate shares one condition and steers only blocks from the condition block on, so its gate reads
    the base model's activations: the decisions hold for every candidate and every α. The prompts are batched as
    :func:`~steering_adapter.measure.scored_runs.score_prompts` batches them (unique prompts, in order), so each
    decision is
    the one generation would take."""
    gated = next((c for c in candidates if c[2]), None)
    decide = getattr(sampler, "gate_decisions", None)
    if gated is None or decide is None:
        return {}
    sampler.activate(gated[0])
    closed: dict[str, list[bool]] = {}
    for eval_set in sets:
        unique = list(dict.fromkeys(eval_set.prompts))
        opened = dict(
            zip(
                unique,
                decide(
                    unique,
                    gated[0],
                    batch_size=batch_size,
                    system_prompt=sampling.get("system_prompt"),
                    chat_template_kwargs=sampling.get("chat_template_kwargs"),
                ),
                strict=True,
            )
        )
        closed[eval_set.name] = [not opened[prompt] for prompt in eval_set.prompts]
    return closed


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
