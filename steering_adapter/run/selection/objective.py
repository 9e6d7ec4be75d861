"""The selection objective: what the layer / α sweep optimises, the constraints a point must meet and the choice.

A :class:`SweepPoint` is one (layers, α) candidate measured on held-out prompts; :func:`check_constraints` lists
what it violates (refusal rates of the constrained sets, KL, answer quality against :func:`quality_limits`),
:func:`choose` picks the best feasible point (near-ties to the smaller |α|, then the lower KL, then fewer layers), and
:func:`objective_value` is the scalar the α refinement minimises (:mod:`steering_adapter.run.selection.refinement`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GOALS = ("remove", "induce")
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


def choose(
    points: Sequence[SweepPoint],
    objective: SelectionObjective,
    near_tie: float = 0.0,
    roles: Mapping[str, str] | None = None,
) -> SweepPoint | None:
    """The best feasible point, or ``None``.

    The best target refusal rate (lowest for ``remove``, highest for ``induce``) wins; every feasible point within
    ``near_tie`` percentage points of it counts as tied, and among those the fewest degenerate answers on the quality
    sets (:meth:`SelectionObjective.quality_sets` of ``roles``; every set when ``roles`` is ``None``,
    :func:`degenerate_pct`), then the smallest |α|, then the lowest KL, then the fewest layers wins.
    """
    quality_sets = objective.quality_sets(roles) if roles is not None else None
    feasible = [point for point in points if point.feasible and not math.isnan(point.target_refusal_pct)]
    if not feasible:
        return None
    sign = 1.0 if objective.goal == "remove" else -1.0
    best = min(sign * point.target_refusal_pct for point in feasible)
    tied = [point for point in feasible if sign * point.target_refusal_pct <= best + near_tie + 1e-9]

    def key(point: SweepPoint) -> tuple[float, float, float, int, float]:
        kl = point.kl if point.kl is not None else 0.0
        degenerate = degenerate_pct(point, quality_sets)
        return (degenerate, abs(point.alpha), kl, point.n_layers, sign * point.target_refusal_pct)

    return min(tied, key=key)


def degenerate_pct(point: SweepPoint, quality_sets: Sequence[str] | None = None) -> float:
    """The mean share (%) of looping / degenerate answers over ``quality_sets`` of the point (all its sets when
    ``None``; ``0`` where not measured)."""
    values = [
        entry["degenerate_pct"]
        for name, entry in point.quality.items()
        if (quality_sets is None or name in quality_sets)
        and isinstance(entry.get("degenerate_pct"), (int, float))
        and math.isfinite(entry["degenerate_pct"])
    ]
    return sum(values) / len(values) if values else 0.0


def objective_value(point: SweepPoint, objective: SelectionObjective) -> float:
    """A scalar to minimise along α: the signed target refusal rate for feasible points (with a small preference for
    smaller |α| and KL), and a large penalty growing with the number of violations for infeasible ones."""
    if not point.feasible or math.isnan(point.target_refusal_pct):
        return 1e4 + len(point.violations)
    sign = 1.0 if objective.goal == "remove" else -1.0
    kl = point.kl if point.kl is not None else 0.0
    return sign * point.target_refusal_pct + 1e-3 * abs(point.alpha) + 1e-4 * kl
