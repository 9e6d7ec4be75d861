"""Condition directions for condition-gated steering (as in Conditional Activation Steering, CAST).

A condition separates the prompts an adapter should steer (``positive``, e.g. political questions) from those it
must leave alone (``negative``, e.g. harmful and benign ones) by the projection of a block's output on a direction.
:func:`fit_condition` estimates one direction per candidate block on training prompts (mean difference, or the
ridge direction ``(Σ_neg + λI)⁻¹(μ_pos − μ_neg)`` that discounts directions along which the negatives already vary),
then on held-out prompts picks the block and the threshold with the best balanced accuracy. The result configures a
gated adapter (``condition_layer``, ``condition_threshold``, ``steering_condition`` tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from steering_adapter.directions.collection import collect_activations
from steering_adapter.directions.fitting import compute_direction
from steering_adapter.tuner.blocks import find_decoder_blocks


@dataclass
class ConditionFit:
    """A fitted condition.

    Attributes:
        layer: the condition block.
        direction: float32 ``[d]`` condition vector (steer when the projection on its unit vector passes).
        threshold: the gate threshold on that projection.
        comparator: ``"greater"`` (positive prompts project higher).
        position: ``"last"`` or ``"mean"`` (as collected).
        method: ``"md"`` or ``"rmd"`` (how the direction was estimated).
        ridge_lambda: relative ridge ``λ`` of ``"rmd"`` (``λ · trace(Σ_neg) / d``); ``None`` for ``"md"``.
        heldout_balanced_accuracy: balanced accuracy of the gate on the held-out prompts, at ``layer``.
        heldout_tpr: share of held-out positive prompts the gate selects.
        heldout_fpr: share of held-out negative prompts the gate selects.
        per_layer: ``{layer: held-out balanced accuracy}`` for every candidate.
    """

    layer: int
    direction: torch.Tensor
    threshold: float
    comparator: str = "greater"
    position: str = "last"
    method: str = "md"
    ridge_lambda: float | None = None
    heldout_balanced_accuracy: float = float("nan")
    heldout_tpr: float = float("nan")
    heldout_fpr: float = float("nan")
    per_layer: dict[int, float] = field(default_factory=dict)

    def config_fields(self) -> dict[str, Any]:
        """The :class:`~steering_adapter.SteeringConfig` fields of this condition."""
        return {
            "condition_layer": self.layer,
            "condition_threshold": self.threshold,
            "condition_comparator": self.comparator,
            "condition_position": self.position,
        }

    def metadata(self) -> dict[str, Any]:
        """Provenance for ``steering_metadata["condition"]``."""
        return {
            "layer": self.layer,
            "threshold": self.threshold,
            "method": self.method,
            "ridge_lambda": self.ridge_lambda,
            "heldout_balanced_accuracy": self.heldout_balanced_accuracy,
            "heldout_tpr": self.heldout_tpr,
            "heldout_fpr": self.heldout_fpr,
            "per_layer_balanced_accuracy": {str(k): v for k, v in self.per_layer.items()},
        }


def best_threshold(
    positive: np.ndarray,
    negative: np.ndarray,
    negative_groups: np.ndarray | None = None,
    max_false_positive_rate: float | None = None,
) -> tuple[float, float]:
    """Threshold ``t`` maximising the balanced accuracy of ``projection > t`` (midpoints between sorted values).

    Args:
        positive: projections ``[n_pos]`` that should pass.
        negative: projections ``[n_neg]`` that should not.
        negative_groups: optional group id ``[n_neg]`` of each negative (e.g. its prompt set): the true-negative
            rate is then the mean over groups, so a small set the gate must not touch weighs as much as a big one.
        max_false_positive_rate: when given, only thresholds that let through at most this share of the negatives
            (in every group) are considered, and among them the one with the best balanced accuracy wins; for gates
            where a leak onto other prompts costs more than a missed target.

    Returns:
        ``(threshold, balanced_accuracy)``; ties go to the threshold with the widest margin.
    """
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("best_threshold needs positive and negative projections")
    values = np.unique(np.concatenate([positive, negative]))
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    tpr = (positive[None, :] > candidates[:, None]).mean(1)
    rejected = negative[None, :] <= candidates[:, None]
    if negative_groups is None:
        tnr = rejected.mean(1)
    else:
        groups = np.asarray(negative_groups)
        tnr = np.mean([rejected[:, groups == g].mean(1) for g in np.unique(groups)], axis=0)
    balanced = (tpr + tnr) / 2
    if max_false_positive_rate is not None:
        if negative_groups is None:
            worst_fpr = 1.0 - rejected.mean(1)
        else:
            worst_fpr = np.max([1.0 - rejected[:, groups == g].mean(1) for g in np.unique(groups)], axis=0)
        balanced = np.where(worst_fpr <= max_false_positive_rate + 1e-12, balanced, -np.inf)
    best = balanced.max()
    ties = np.flatnonzero(np.isclose(balanced, best))
    everything = np.concatenate([positive, negative])
    margins = [np.abs(everything - candidates[i]).min() for i in ties]
    index = ties[int(np.argmax(margins))]
    return float(candidates[index]), float(best)


def fit_condition(
    model: nn.Module,
    tokenizer: Any,
    positive_train: Sequence[str],
    negative_train: Sequence[str],
    positive_heldout: Sequence[str],
    negative_heldout: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    position: str = "last",
    method: str = "md",
    ridge_lambda: float = 1.0,
    negative_train_groups: Sequence[int] | None = None,
    negative_heldout_groups: Sequence[int] | None = None,
    max_false_positive_rate: float | None = None,
    batch_size: int = 8,
    system_prompt: str | None = None,
    progress: bool = True,
) -> ConditionFit:
    """Fit a condition direction per candidate block and choose block and threshold on held-out prompts.

    Args:
        model: the base model (no adapters active).
        tokenizer: its tokenizer.
        positive_train: prompts to steer, for the directions (mean difference positive − negative).
        negative_train: prompts to leave alone.
        positive_heldout: held-out prompts to steer, for the block and threshold choice.
        negative_heldout: held-out prompts to leave alone.
        layers: candidate condition blocks (default: the first half of the decoder; earlier blocks let the
            behaviour vectors act on more blocks).
        position: ``"last"`` prompt token or ``"mean"``.
        method: ``"md"`` (``μ_pos − μ_neg``) or ``"rmd"`` (``(Σ_neg + λI)⁻¹(μ_pos − μ_neg)``, ``Σ_neg`` the
            covariance of the negative training prompts around their mean): the ridge direction ignores what
            varies among the prompts to leave alone, so a gate on it lets fewer of them through.
        ridge_lambda: relative ``λ > 0`` for ``"rmd"`` (``λ · trace(Σ_neg) / d``).
        negative_train_groups: group id of each negative training prompt (e.g. its source): the negative mean is
            then the mean of the group means (weights ``1 / group size``, in ``Σ_neg`` too).
        negative_heldout_groups: group id of each negative held-out prompt: the threshold then maximises the
            balanced accuracy with the true-negative rate averaged over groups (see :func:`best_threshold`).
        max_false_positive_rate: cap on the share of held-out negatives (per group) the gate may select.

    Returns:
        The :class:`ConditionFit` with the best held-out balanced accuracy (ties: the earliest block).

    Raises:
        ValueError: an empty prompt list or an unknown method.
    """
    if method not in ("md", "rmd"):
        raise ValueError(f"fit_condition: method must be 'md' or 'rmd', got {method!r}")
    for name, prompts in (
        ("positive_train", positive_train),
        ("negative_train", negative_train),
        ("positive_heldout", positive_heldout),
        ("negative_heldout", negative_heldout),
    ):
        if not prompts:
            raise ValueError(f"fit_condition: {name} is empty")
    if layers is None:
        layers = list(range(max(1, len(find_decoder_blocks(model)) // 2)))
    layers = sorted(int(layer) for layer in layers)
    common = dict(
        layers=layers,
        position=position,
        batch_size=batch_size,
        keep_activations=True,
        progress=progress,
        system_prompt=system_prompt,
    )
    train = collect_activations(model, tokenizer, list(positive_train) + list(negative_train), **common)
    held = collect_activations(model, tokenizer, list(positive_heldout) + list(negative_heldout), **common)
    n_pos, n_pos_held = len(positive_train), len(positive_heldout)
    weights = None
    if negative_train_groups is not None:  # every group weighs the same in the negative mean
        train_groups = torch.as_tensor(list(negative_train_groups))
        sizes = {int(g): int((train_groups == g).sum()) for g in train_groups.unique()}
        weights = torch.tensor([1.0 / sizes[int(g)] for g in train_groups], dtype=torch.float64)
    held_groups = None if negative_heldout_groups is None else np.asarray(list(negative_heldout_groups))
    best: ConditionFit | None = None
    per_layer: dict[int, float] = {}
    for layer in layers:
        acts = train.layer_activations(layer).double()
        positives, negatives = acts[:n_pos], acts[n_pos:]
        direction = compute_direction(
            positives,
            negatives,
            method=method,
            ridge_lambda=ridge_lambda,
            compliant_weights=weights,
            lambda_mode="relative",
        )
        unit = direction.double() / direction.double().norm()
        projections = (held.layer_activations(layer).double() @ unit).numpy()
        threshold, accuracy = best_threshold(
            projections[:n_pos_held], projections[n_pos_held:], held_groups, max_false_positive_rate
        )
        per_layer[layer] = accuracy
        if best is None or accuracy > best.heldout_balanced_accuracy + 1e-12:
            best = ConditionFit(
                layer=layer,
                direction=direction.float(),
                threshold=threshold,
                position=position,
                method=method,
                ridge_lambda=ridge_lambda if method == "rmd" else None,
                heldout_balanced_accuracy=accuracy,
                heldout_tpr=float((projections[:n_pos_held] > threshold).mean()),
                heldout_fpr=float((projections[n_pos_held:] > threshold).mean()),
            )
    assert best is not None
    best.per_layer = per_layer
    return best
