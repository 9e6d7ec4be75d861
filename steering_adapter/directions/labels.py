"""Classes and weights of samples: the one rule that turns refusal-confidence scores or labels into both.

A sample is on the refusal side when its score ``c > refusal_threshold``, on the compliance side when
``c < compliance_threshold`` and neutral (dropped) in between; explicit labels override the scores. With
``weighting="confidence"`` (WRMD) each sample also weighs the judge's confidence, ``max(c, ε)`` on the refusal side
and ``max(−c, ε)`` on the compliance side. :func:`assign_labels` applies the rule; the collector, the statistics, the
estimators and the diagnostics all go through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

REFUSAL = "refusal"
COMPLIANCE = "compliance"
CLASSES: tuple[str, str] = (REFUSAL, COMPLIANCE)

DEFAULT_REFUSAL_THRESHOLD = 0.1
DEFAULT_COMPLIANCE_THRESHOLD = -0.1
DEFAULT_EPSILON = 0.01

Weighting = Literal["none", "confidence"]
ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def as_vector(
    values: ArrayLike, name: str, n: int, dtype: torch.dtype = torch.float64, allow_nan: bool = False
) -> torch.Tensor:
    """One value per sample as a CPU tensor, checked.

    Args:
        values: ``[n]`` values (tensor, array or sequence).
        name: the argument's name, for error messages.
        n: the number of samples.
        dtype: the result's dtype; ``torch.bool`` returns the values unconverted (see :func:`as_labels`).
        allow_nan: accept NaN (infinities are refused either way).

    Returns:
        ``[n]`` tensor on CPU, in ``dtype``.

    Raises:
        ValueError: for another shape or non-finite values.
    """
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    tensor = tensor.detach().cpu()
    if tensor.ndim != 1 or tensor.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one value per sample), got {tuple(tensor.shape)}")
    if dtype == torch.bool:
        return tensor
    tensor = tensor.to(dtype)
    bad = torch.isinf(tensor) if allow_nan else ~torch.isfinite(tensor)
    if bool(bad.any()):
        raise ValueError(f"{name} contains non-finite values ({'inf' if allow_nan else 'NaN or inf'})")
    return tensor


def as_labels(labels: ArrayLike, n: int) -> torch.Tensor:
    """Class labels ``[n]`` as a bool CPU tensor (``True`` = refusal).

    Args:
        labels: booleans, or 0/1 integers (1 = refusal), ``[n]``.
        n: the number of samples.

    Returns:
        bool ``[n]`` on CPU.

    Raises:
        ValueError: for another shape, float labels (scores belong in ``scores=``) or integers other than 0 and 1.
    """
    tensor = as_vector(labels, "labels", n, dtype=torch.bool)
    if tensor.dtype == torch.bool:
        return tensor
    if tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(
            f"labels must be booleans (True = refusal) or 0/1 integers, got dtype {tensor.dtype}; "
            "pass refusal-confidence scores with scores=... instead"
        )
    if not bool(((tensor == 0) | (tensor == 1)).all()):
        raise ValueError("integer labels must be 0 (compliance) or 1 (refusal)")
    return tensor.bool()


def validate_thresholds(refusal_threshold: float, compliance_threshold: float) -> None:
    """Check that ``-1 <= compliance_threshold <= refusal_threshold <= 1``.

    Raises:
        ValueError: when they are not finite or not in that order.
    """
    if not (math.isfinite(refusal_threshold) and math.isfinite(compliance_threshold)):
        raise ValueError("refusal_threshold and compliance_threshold must be finite")
    if not -1.0 <= compliance_threshold <= refusal_threshold <= 1.0:
        raise ValueError(
            "thresholds must satisfy -1 <= compliance_threshold <= refusal_threshold <= 1, got "
            f"compliance_threshold={compliance_threshold}, refusal_threshold={refusal_threshold}"
        )


def validate_epsilon(epsilon: float) -> None:
    """Check that the confidence floor ``epsilon`` is finite and positive.

    Raises:
        ValueError: otherwise.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")


@dataclass(frozen=True)
class LabelAssignment:
    """Class membership and weight of each sample.

    Attributes:
        is_refusal: bool ``[n]``, ``True`` for the refusal side (meaningful where ``keep`` is ``True``).
        keep: bool ``[n]``, ``False`` for neutral samples (scores between the thresholds) and zero-weight
            samples.
        weights: float64 ``[n]``, the sample weight times, with ``weighting="confidence"``, the judge
            confidence ``max(c, ε)`` (refusal side) or ``max(−c, ε)`` (compliance side).
    """

    is_refusal: torch.Tensor
    keep: torch.Tensor
    weights: torch.Tensor

    def count(self, cls: str) -> int:
        """Number of kept samples in class ``cls`` (``"refusal"`` or ``"compliance"``)."""
        side = self.is_refusal if cls == REFUSAL else ~self.is_refusal
        return int((side & self.keep).sum())


def assign_labels(
    n: int,
    *,
    labels: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
    compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
    weighting: Weighting = "none",
    epsilon: float = DEFAULT_EPSILON,
) -> LabelAssignment:
    """Turn labels or refusal-confidence scores into classes and weights.

    With ``labels`` the classes are given (no sample is neutral); ``scores`` are then only used for confidence
    weights. Without ``labels``, a sample is refusal when ``c > refusal_threshold``, compliance when
    ``c < compliance_threshold`` and neutral (dropped) otherwise. A NaN score means "no usable judge label"
    (the scoring stage's convention): such samples are neutral, and get no confidence weight.

    Args:
        n: number of samples.
        labels: booleans (or 0/1) ``[n]``, ``True`` = refusal.
        scores: refusal-confidence scores ``c`` in ``[-1, 1]`` (or NaN for unscored), ``[n]``.
        sample_weight: non-negative extra weights ``[n]``; zero-weight samples are dropped.
        refusal_threshold: scores above it are refusal.
        compliance_threshold: scores below it are compliance.
        weighting: ``"none"`` (weights = sample weights) or ``"confidence"`` (times the judge confidence;
            needs ``scores``).
        epsilon: floor of the confidence weights.

    Returns:
        The :class:`LabelAssignment`.

    Raises:
        ValueError: for missing labels and scores, wrong shapes, infinite scores, non-finite weights, scores
            outside ``[-1, 1]``, negative weights, bad thresholds or an unknown ``weighting``.
    """
    if weighting not in ("none", "confidence"):
        raise ValueError(f"unknown weighting {weighting!r}; expected 'none' or 'confidence'")
    if labels is None and scores is None:
        raise ValueError("give labels (True = refusal) or refusal-confidence scores")
    validate_thresholds(refusal_threshold, compliance_threshold)
    score_tensor = None
    if scores is not None:
        score_tensor = as_vector(scores, "scores", n, allow_nan=True)  # NaN: no usable judge label
        if bool(((score_tensor < -1) | (score_tensor > 1)).any()):
            raise ValueError("refusal-confidence scores must lie in [-1, 1]")
    if labels is not None:
        is_refusal = as_labels(labels, n)
        keep = torch.ones(n, dtype=torch.bool)
    else:
        is_refusal = score_tensor > refusal_threshold
        keep = is_refusal | (score_tensor < compliance_threshold)
    weights = torch.ones(n, dtype=torch.float64)
    if sample_weight is not None:
        weights = as_vector(sample_weight, "sample_weight", n)
        if bool((weights < 0).any()):
            raise ValueError("sample_weight must be non-negative")
    if weighting == "confidence":
        if score_tensor is None:
            raise ValueError("confidence weighting (WRMD) needs refusal-confidence scores; got labels only")
        validate_epsilon(epsilon)
        confidence = torch.where(is_refusal, score_tensor, -score_tensor).clamp_min(epsilon)
        weights = torch.nan_to_num(weights * confidence, nan=0.0)  # no score, no confidence: dropped
    keep = keep & (weights > 0)
    return LabelAssignment(is_refusal=is_refusal, keep=keep, weights=weights)
