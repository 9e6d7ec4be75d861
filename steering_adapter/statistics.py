"""Streaming, mergeable activation statistics per class (refusal / compliance) and per decoder block.

For each class and each layer we keep, in float64,

- ``count``: number of samples (with a positive weight),
- ``Σw`` and ``Σw²``: sum of weights and of squared weights,
- ``Σw·x``: weighted sum of activations, ``[L, d]``,
- ``Σw·xxᵀ``: weighted sum of outer products, ``[L, d, d]`` (optional per class),

so memory does not depend on the number of prompts, and statistics from separate runs (shards, machines, days)
merge exactly by adding the sums. They give the weighted mean ``μ = Σw·x / Σw`` and the weighted covariance

    Σ = (Σw·xxᵀ − Σw · μμᵀ) / (Σw − Σw² / Σw)

which is the unbiased covariance with *reliability* weights (``numpy.cov(x.T, aweights=w)``); with unit
weights it is the usual ``n − 1`` sample covariance.

This module also owns the one rule that turns refusal-confidence scores or explicit labels into classes and
weights (:func:`assign_labels`), shared by the collector and the estimators.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

REFUSAL = "refusal"
COMPLIANCE = "compliance"
CLASSES: tuple[str, str] = (REFUSAL, COMPLIANCE)

DEFAULT_REFUSAL_THRESHOLD = 0.1
DEFAULT_COMPLIANCE_THRESHOLD = -0.1
DEFAULT_EPSILON = 0.01

Weighting = Literal["none", "confidence"]
SecondMoments = Literal["both", "compliance", "none"]

_FORMAT_VERSION = 1
ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def _as_vector(
    values: ArrayLike, name: str, n: int, dtype: torch.dtype = torch.float64, allow_nan: bool = False
) -> torch.Tensor:
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


def _as_labels(labels: ArrayLike, n: int) -> torch.Tensor:
    tensor = _as_vector(labels, "labels", n, dtype=torch.bool)
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
        score_tensor = _as_vector(scores, "scores", n, allow_nan=True)  # NaN: no usable judge label
        if bool(((score_tensor < -1) | (score_tensor > 1)).any()):
            raise ValueError("refusal-confidence scores must lie in [-1, 1]")
    if labels is not None:
        is_refusal = _as_labels(labels, n)
        keep = torch.ones(n, dtype=torch.bool)
    else:
        is_refusal = score_tensor > refusal_threshold
        keep = is_refusal | (score_tensor < compliance_threshold)
    weights = torch.ones(n, dtype=torch.float64)
    if sample_weight is not None:
        weights = _as_vector(sample_weight, "sample_weight", n)
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


@dataclass
class _ClassMoments:
    count: int
    weight_sum: float
    weight_sq_sum: float
    sum: torch.Tensor  # [L, d]
    outer: torch.Tensor | None  # [L, d, d]


@dataclass(eq=False)
class ActivationStatistics:
    """Streaming first and second moments of activations, per class and per layer, in float64.

    Build empty statistics, feed batches with :meth:`update` (or :meth:`add`), combine runs with
    :meth:`merge`, read :meth:`mean` and :meth:`covariance`, and :meth:`save` / :meth:`load` them.

    Memory: ``2 · L · d`` values for the sums plus ``L · d²`` per class that keeps second moments. Keeping
    them only for the compliance class (``second_moments="compliance"``) halves the memory and is all that
    :class:`~steering_adapter.estimators.RidgeMeanDifference` needs.

    Args:
        layers: block indices, in the order of the ``L`` axis of the activations fed to :meth:`update`.
        hidden_size: activation width ``d``.
        weighting: ``"none"`` or ``"confidence"``: how the weights were made (see :func:`assign_labels`); MD
            and RMD need ``"none"``, WRMD ``"confidence"``.
        epsilon: confidence floor used with ``weighting="confidence"``.
        refusal_threshold: score threshold used by :meth:`add`.
        compliance_threshold: score threshold used by :meth:`add`.
        second_moments: which classes keep ``Σw·xxᵀ``: ``"both"``, ``"compliance"`` or ``"none"``.
        device: where the sums live (and where :meth:`update` does its arithmetic).
        metadata: free JSON-serialisable provenance (model, position, ...); must match for :meth:`merge`.
    """

    layers: list[int]
    hidden_size: int
    weighting: Weighting = "none"
    epsilon: float = DEFAULT_EPSILON
    refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD
    compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD
    second_moments: SecondMoments = "both"
    device: torch.device | str = "cpu"
    metadata: dict[str, Any] = field(default_factory=dict)
    _moments: dict[str, _ClassMoments] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.layers = [int(layer) for layer in self.layers]
        if not self.layers:
            raise ValueError("statistics need at least one layer")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate layers in {self.layers}")
        if self.hidden_size <= 0:
            raise ValueError(f"hidden_size must be positive, got {self.hidden_size}")
        if self.weighting not in ("none", "confidence"):
            raise ValueError(f"unknown weighting {self.weighting!r}; expected 'none' or 'confidence'")
        if self.second_moments not in ("both", "compliance", "none"):
            raise ValueError(
                f"unknown second_moments {self.second_moments!r}; expected 'both', 'compliance' or 'none'"
            )
        validate_thresholds(self.refusal_threshold, self.compliance_threshold)
        validate_epsilon(self.epsilon)
        self.device = torch.device(self.device)
        n_layers, d = len(self.layers), self.hidden_size
        self._moments = {}
        for cls in CLASSES:
            outer = None
            if self.has_second_moments(cls):
                outer = torch.zeros(n_layers, d, d, dtype=torch.float64, device=self.device)
            self._moments[cls] = _ClassMoments(
                0, 0.0, 0.0, torch.zeros(n_layers, d, dtype=torch.float64, device=self.device), outer
            )

    # ------------------------------------------------------------------------------------------------ feeding

    def has_second_moments(self, cls: str) -> bool:
        """Whether class ``cls`` keeps ``Σw·xxᵀ`` (and so has a covariance)."""
        self._check_class(cls)
        return self.second_moments == "both" or (self.second_moments == "compliance" and cls == COMPLIANCE)

    def update(self, activations: torch.Tensor, is_refusal: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Add a batch of activations whose classes and weights are already known.

        Args:
            activations: ``[n, L, d]`` (or ``[n, d]`` when there is one layer), any float dtype and device.
            is_refusal: bool ``[n]``, ``True`` = refusal side.
            weights: non-negative ``[n]``; ``None`` means 1. Zero-weight samples are skipped.

        Raises:
            ValueError: on a shape mismatch, non-finite activations or negative weights.
        """
        acts = self._check_activations(activations)
        n = acts.shape[0]
        side = _as_labels(is_refusal, n).to(self.device)
        if weights is None:
            w = torch.ones(n, dtype=torch.float64, device=self.device)
        else:
            w = _as_vector(weights, "weights", n).to(self.device)
            if bool((w < 0).any()):
                raise ValueError("weights must be non-negative")
        for cls, mask in ((REFUSAL, side), (COMPLIANCE, ~side)):
            mask = mask & (w > 0)
            if not bool(mask.any()):
                continue
            x = acts[mask]  # [m, L, d]
            wm = w[mask]  # [m]
            moments = self._moments[cls]
            moments.count += int(mask.sum())
            moments.weight_sum += float(wm.sum())
            moments.weight_sq_sum += float((wm * wm).sum())
            moments.sum += torch.einsum("n,nld->ld", wm, x)
            if moments.outer is not None:
                xt = x.transpose(0, 1)  # [L, m, d]
                moments.outer.baddbmm_((xt * wm[None, :, None]).transpose(1, 2), xt)

    def add(
        self,
        activations: torch.Tensor,
        *,
        labels: ArrayLike | None = None,
        scores: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> None:
        """Add a batch given labels or refusal-confidence scores (this object's thresholds and weighting).

        Args:
            activations: ``[n, L, d]`` (or ``[n, d]`` with one layer).
            labels: booleans ``[n]`` (``True`` = refusal).
            scores: refusal-confidence scores in ``[-1, 1]``, ``[n]``; neutral samples are dropped when no
                labels are given.
            sample_weight: optional non-negative extra weights ``[n]``.
        """
        n = activations.shape[0]
        assignment = assign_labels(
            n,
            labels=labels,
            scores=scores,
            sample_weight=sample_weight,
            refusal_threshold=self.refusal_threshold,
            compliance_threshold=self.compliance_threshold,
            weighting=self.weighting,
            epsilon=self.epsilon,
        )
        weights = torch.where(assignment.keep, assignment.weights, torch.zeros_like(assignment.weights))
        self.update(activations, assignment.is_refusal, weights)

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def nbytes(self) -> int:
        """Memory held by the sums, in bytes (independent of the number of samples)."""
        total = 0
        for moments in self._moments.values():
            total += moments.sum.numel() * moments.sum.element_size()
            if moments.outer is not None:
                total += moments.outer.numel() * moments.outer.element_size()
        return total

    def count(self, cls: str) -> int:
        """Number of samples of class ``cls`` (``"refusal"`` or ``"compliance"``)."""
        self._check_class(cls)
        return self._moments[cls].count

    def weight_sum(self, cls: str) -> float:
        """``Σw`` of class ``cls``."""
        self._check_class(cls)
        return self._moments[cls].weight_sum

    def mean(self, cls: str, layer: int) -> torch.Tensor:
        """Weighted mean ``Σw·x / Σw`` of class ``cls`` at block ``layer``.

        Returns:
            float64 ``[d]`` on :attr:`device`.

        Raises:
            ValueError: when the class is empty or the layer unknown.
        """
        index = self.layer_position(layer)
        moments = self._nonempty(cls)
        return moments.sum[index] / moments.weight_sum

    def covariance(self, cls: str, layer: int) -> torch.Tensor:
        """Unbiased weighted covariance of class ``cls`` at block ``layer`` (reliability weights).

        ``Σ = (Σw·xxᵀ − Σw·μμᵀ) / (Σw − Σw²/Σw)``; equals ``numpy.cov(x.T, aweights=w)``.

        Returns:
            float64 ``[d, d]``, symmetric, on :attr:`device`.

        Raises:
            ValueError: when the class has no second moments, fewer than 2 samples, or a degenerate weighting.
        """
        index = self.layer_position(layer)
        moments = self._nonempty(cls)
        if moments.outer is None:
            raise ValueError(
                f"these statistics keep no second moments for the {cls} class (second_moments="
                f"{self.second_moments!r}); collect with second_moments='both' or 'compliance'"
            )
        if moments.count < 2:
            raise ValueError(f"the {cls} class needs at least 2 samples for a covariance, has {moments.count}")
        denominator = moments.weight_sum - moments.weight_sq_sum / moments.weight_sum
        if not denominator > 0:
            raise ValueError(f"the weights of the {cls} class leave no degrees of freedom for a covariance")
        mean = moments.sum[index] / moments.weight_sum
        cov = (moments.outer[index] - moments.weight_sum * torch.outer(mean, mean)) / denominator
        return (cov + cov.T) / 2

    def layer_position(self, layer: int) -> int:
        """Position of block ``layer`` on the ``L`` axis.

        Raises:
            ValueError: when the layer was not collected.
        """
        try:
            return self.layers.index(int(layer))
        except ValueError:
            raise ValueError(f"layer {layer} is not in these statistics (layers {self.layers})") from None

    # -------------------------------------------------------------------------------------------- combination

    def merge(self, other: ActivationStatistics) -> ActivationStatistics:
        """Exact combination of two statistics over disjoint samples (sums add up).

        Args:
            other: statistics with the same layers, hidden size, weighting, epsilon, thresholds,
                second moments and metadata.

        Returns:
            New statistics (neither input is modified), on this object's device.

        Raises:
            ValueError: when the two are not compatible.
        """
        for name in (
            "layers",
            "hidden_size",
            "weighting",
            "epsilon",
            "refusal_threshold",
            "compliance_threshold",
            "second_moments",
            "metadata",
        ):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise ValueError(f"cannot merge statistics with different {name}: {mine!r} vs {theirs!r}")
        merged = self._empty_like()
        for cls in CLASSES:
            a, b, out = self._moments[cls], other._moments[cls], merged._moments[cls]
            out.count = a.count + b.count
            out.weight_sum = a.weight_sum + b.weight_sum
            out.weight_sq_sum = a.weight_sq_sum + b.weight_sq_sum
            out.sum = a.sum + b.sum.to(self.device)
            if a.outer is not None:
                out.outer = a.outer + b.outer.to(self.device)
        return merged

    def __add__(self, other: ActivationStatistics) -> ActivationStatistics:
        return self.merge(other)

    # ------------------------------------------------------------------------------------------------ storage

    def save(self, path: str | Path) -> Path:
        """Write the sums to ``path`` (safetensors) and the rest to the JSON file next to it.

        Args:
            path: file name; ``.safetensors`` is appended when missing. The JSON sidecar has the same stem and
                the suffix ``.json``.

        Returns:
            The path of the safetensors file.
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        classes: dict[str, dict[str, Any]] = {}
        for cls in CLASSES:
            moments = self._moments[cls]
            tensors[f"{cls}.sum"] = moments.sum.detach().cpu().contiguous()
            if moments.outer is not None:
                tensors[f"{cls}.outer"] = moments.outer.detach().cpu().contiguous()
            classes[cls] = {
                "count": moments.count,
                "weight_sum": moments.weight_sum,
                "weight_sq_sum": moments.weight_sq_sum,
            }
        save_file(tensors, str(path), metadata={"format": "steering_adapter.ActivationStatistics"})
        info = {
            "format_version": _FORMAT_VERSION,
            "layers": self.layers,
            "hidden_size": self.hidden_size,
            "weighting": self.weighting,
            "epsilon": self.epsilon,
            "refusal_threshold": self.refusal_threshold,
            "compliance_threshold": self.compliance_threshold,
            "second_moments": self.second_moments,
            "metadata": self.metadata,
            "classes": classes,
            "tensors": path.name,
        }
        path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ActivationStatistics:
        """Read statistics written by :meth:`save`.

        Args:
            path: the safetensors file (or its JSON sidecar).
            device: where to put the sums.
        """
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        elif path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        info = json.loads(path.with_suffix(".json").read_text())
        if info.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported statistics format version {info.get('format_version')!r} in {path}")
        stats = cls(
            layers=info["layers"],
            hidden_size=info["hidden_size"],
            weighting=info["weighting"],
            epsilon=info["epsilon"],
            refusal_threshold=info["refusal_threshold"],
            compliance_threshold=info["compliance_threshold"],
            second_moments=info["second_moments"],
            device=device,
            metadata=info.get("metadata", {}),
        )
        tensors = load_file(str(path), device=str(stats.device))
        for name in CLASSES:
            moments = stats._moments[name]
            moments.count = int(info["classes"][name]["count"])
            moments.weight_sum = float(info["classes"][name]["weight_sum"])
            moments.weight_sq_sum = float(info["classes"][name]["weight_sq_sum"])
            moments.sum = tensors[f"{name}.sum"].to(torch.float64)
            if moments.outer is not None:
                moments.outer = tensors[f"{name}.outer"].to(torch.float64)
        return stats

    # ------------------------------------------------------------------------------------------------ helpers

    def _empty_like(self) -> ActivationStatistics:
        return ActivationStatistics(
            layers=list(self.layers),
            hidden_size=self.hidden_size,
            weighting=self.weighting,
            epsilon=self.epsilon,
            refusal_threshold=self.refusal_threshold,
            compliance_threshold=self.compliance_threshold,
            second_moments=self.second_moments,
            device=self.device,
            metadata=dict(self.metadata),
        )

    @staticmethod
    def _check_class(cls: str) -> None:
        if cls not in CLASSES:
            raise ValueError(f"unknown class {cls!r}; expected 'refusal' or 'compliance'")

    def _nonempty(self, cls: str) -> _ClassMoments:
        self._check_class(cls)
        moments = self._moments[cls]
        if moments.count == 0 or moments.weight_sum <= 0:
            raise ValueError(f"the {cls} class is empty in these statistics")
        return moments

    def _check_activations(self, activations: torch.Tensor) -> torch.Tensor:
        acts = torch.as_tensor(activations)
        if acts.ndim == 2 and len(self.layers) == 1:
            acts = acts[:, None, :]
        expected = (len(self.layers), self.hidden_size)
        if acts.ndim != 3 or tuple(acts.shape[1:]) != expected:
            raise ValueError(
                f"activations must have shape [n, {expected[0]}, {expected[1]}] (samples, layers, hidden), "
                f"got {tuple(acts.shape)}"
            )
        acts = acts.to(device=self.device, dtype=torch.float64)
        if not torch.isfinite(acts).all():
            raise ValueError("activations contain non-finite values (NaN or inf)")
        return acts
