"""Streaming, mergeable activation statistics per class (refusal / compliance) and per decoder block.

For each class and each block we keep, in float64,

- ``count``: number of samples (with a positive weight),
- ``Σw`` and ``Σw²``: sum of weights and of squared weights,
- ``Σw·x``: weighted sum of activations, ``[d]`` per block,
- ``Σw·xxᵀ``: weighted sum of outer products, ``[d, d]`` per block — only the ones an estimator needs
  (``second_moments``): none (MD), the compliance class's (RMD / WRMD, the default of the estimators), one matrix
  over both classes (``"pooled"``: RMD with the pooled within-class covariance) or each class's (``"both"``),

so memory does not depend on the number of prompts, and statistics from separate runs (shards, processes, machines,
days) merge exactly by adding the sums. They give the weighted mean ``μ = Σw·x / Σw`` and the weighted covariance

    Σ = (Σw·xxᵀ − Σw · μμᵀ) / (Σw − Σw² / Σw)

which is the unbiased covariance with *reliability* weights (``numpy.cov(x.T, aweights=w)``); with unit
weights it is the usual ``n − 1`` sample covariance.

**Memory.** With ``L`` blocks of width ``d`` and ``k`` second-moment matrices per block (``k = 0`` for ``"none"``, 1
for ``"compliance"`` or ``"pooled"``, 2 for ``"both"``) the sums take

    bytes = 8 · L · (2·d + k·d²)                      (:func:`statistics_nbytes`)

whatever the model's dtype and the number of prompts (two classes × ``d`` first moments, float64). Adding a batch
needs, besides the batch itself, one float32 scratch block of ``4 · d · ⌈d/8⌉`` bytes (:func:`scratch_nbytes`). E.g.
RMD on 80 candidate blocks of a d = 8192 model: 80 · (2·8192 + 8192²) · 8 B = 40.0 GiB; on the 16 blocks of a middle
band: 8.0 GiB; MD on all 80: 10 MiB.

**Where and how a batch is added.** Each block's sums live on a device of their own (``device`` may map blocks to
devices: a ``device_map`` model keeps every block's statistics next to the block). A batch is reduced on that device
in the activations' precision promoted to at least float32 (bf16/fp16 activations are reduced in float32; float64
input stays float64), *around the batch's own class mean* ``c`` (shifted data): ``Σw·x`` is summed in float64 and
``Σw·(x−c)(x−c)ᵀ`` in float32, then merged into the float64 running sums with the exact identity
``Σw·xxᵀ = Σw·(x−c)(x−c)ᵀ + c·sᵀ + s_c·cᵀ`` (``s = Σw·x``, ``s_c = s − Σw·c``), i.e. a float64 running merge per
batch. The float32 rounding then scales with the spread of the batch around its mean, not with ``|x|²``: a large
common offset (the massive activations of real LLMs) costs nothing. Measured bound (``tests/test_statistics.py``):
covariance relative error ≤ 1e-5 against a float64 reference with offsets 1000× the spread, where the plain
float32 sum ``Σxxᵀ`` loses every digit.

This module also owns the one rule that turns refusal-confidence scores or explicit labels into classes and
weights (:func:`assign_labels`), shared by the collector and the estimators, and what each estimator needs
(:class:`StatisticsSpec`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
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
SecondMoments = Literal["both", "compliance", "pooled", "none"]
SECOND_MOMENTS: tuple[str, ...] = ("both", "compliance", "pooled", "none")
# number of [d, d] matrices per block for each setting
SECOND_MOMENT_MATRICES = {"both": 2, "compliance": 1, "pooled": 1, "none": 0}

_FORMAT_VERSION = 2  # 1: tensors stacked over blocks ([L, d], [L, d, d]); 2: one tensor per block
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


def _check_second_moments(second_moments: str) -> None:
    if second_moments not in SECOND_MOMENTS:
        raise ValueError(f"unknown second_moments {second_moments!r}; expected one of {list(SECOND_MOMENTS)}")


def statistics_nbytes(n_layers: int, hidden_size: int, second_moments: SecondMoments = "both") -> int:
    """Bytes held by :class:`ActivationStatistics`: ``8 · L · (2·d + k·d²)``.

    Args:
        n_layers: ``L``, the number of (candidate) blocks collected.
        hidden_size: ``d``.
        second_moments: ``"none"`` (``k = 0``), ``"compliance"`` or ``"pooled"`` (``k = 1``), ``"both"`` (``k = 2``).

    Returns:
        The bytes of every float64 sum; independent of the number of prompts and of the model's dtype.
    """
    _check_second_moments(second_moments)
    k = SECOND_MOMENT_MATRICES[second_moments]
    return 8 * int(n_layers) * (2 * int(hidden_size) + k * int(hidden_size) ** 2)


def scratch_rows(hidden_size: int) -> int:
    """Rows of the float32 block in which a batch's outer products are formed: ``⌈d/8⌉``."""
    return max(1, math.ceil(int(hidden_size) / 8))


def scratch_nbytes(hidden_size: int, second_moments: SecondMoments = "both") -> int:
    """Transient bytes while a batch is added: one float32 ``[⌈d/8⌉, d]`` block (0 without second moments)."""
    _check_second_moments(second_moments)
    if SECOND_MOMENT_MATRICES[second_moments] == 0:
        return 0
    return 4 * int(hidden_size) * scratch_rows(hidden_size)


@dataclass(frozen=True)
class StatisticsSpec:
    """The statistics an estimator needs: how samples are weighted and which second moments are kept.

    Attributes:
        weighting: ``"none"`` (MD, RMD) or ``"confidence"`` (WRMD).
        second_moments: ``"none"`` (MD), ``"compliance"`` (RMD / WRMD), ``"pooled"`` (RMD / WRMD with
            ``covariance="pooled"``) or ``"both"``.
    """

    weighting: Weighting = "none"
    second_moments: SecondMoments = "compliance"

    def nbytes(self, n_layers: int, hidden_size: int) -> int:
        """:func:`statistics_nbytes` of these statistics for ``n_layers`` blocks of width ``hidden_size``."""
        return statistics_nbytes(n_layers, hidden_size, self.second_moments)


@dataclass
class _ClassMoments:
    count: int
    weight_sum: float
    weight_sq_sum: float
    sums: list[torch.Tensor]  # per block: [d]
    outers: list[torch.Tensor] | None  # per block: [d, d], this class only


DeviceSpec = torch.device | str | Mapping[int, torch.device | str]


@dataclass(eq=False)
class ActivationStatistics:
    """Streaming first and second moments of activations, per class and per block, in float64.

    Build empty statistics, feed batches with :meth:`update` (or :meth:`add`), combine runs with
    :meth:`merge` (or across processes with :meth:`all_reduce`), read :meth:`mean`, :meth:`covariance` and
    :meth:`pooled_covariance`, and :meth:`save` / :meth:`load` them.

    Memory: ``8 · L · (2·d + k·d²)`` bytes (see the module docstring and :func:`statistics_nbytes`); keep only the
    second moments the estimator needs (``second_moments="compliance"`` for RMD / WRMD, ``"none"`` for MD).

    Args:
        layers: block indices, in the order of the ``L`` axis of the activations fed to :meth:`update`.
        hidden_size: activation width ``d``.
        weighting: ``"none"`` or ``"confidence"``: how the weights were made (see :func:`assign_labels`); MD
            and RMD need ``"none"``, WRMD ``"confidence"``.
        epsilon: confidence floor used with ``weighting="confidence"``.
        refusal_threshold: score threshold used by :meth:`add`.
        compliance_threshold: score threshold used by :meth:`add`.
        second_moments: which ``Σw·xxᵀ`` are kept: ``"both"`` (each class), ``"compliance"``, ``"pooled"`` (one
            matrix over both classes, for the pooled within-class covariance) or ``"none"``.
        device: where the sums live and :meth:`update` does its arithmetic: one device, or ``{block: device}`` so
            that each block's sums sit on that block's device.
        metadata: free JSON-serialisable provenance (model, position, ...); must match for :meth:`merge`.
    """

    layers: list[int]
    hidden_size: int
    weighting: Weighting = "none"
    epsilon: float = DEFAULT_EPSILON
    refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD
    compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD
    second_moments: SecondMoments = "both"
    device: DeviceSpec = "cpu"
    metadata: dict[str, Any] = field(default_factory=dict)
    _moments: dict[str, _ClassMoments] = field(init=False, repr=False)
    _pooled: list[torch.Tensor] | None = field(init=False, repr=False)

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
        _check_second_moments(self.second_moments)
        validate_thresholds(self.refusal_threshold, self.compliance_threshold)
        validate_epsilon(self.epsilon)
        self.devices: dict[int, torch.device] = self._resolve_devices(self.device)
        distinct = set(self.devices.values())
        self.device = next(iter(distinct)) if len(distinct) == 1 else dict(self.devices)
        d = self.hidden_size
        self._moments = {}
        for cls in CLASSES:
            outers = None
            if self.has_second_moments(cls):
                outers = [self._zeros(layer, d, d) for layer in self.layers]
            self._moments[cls] = _ClassMoments(0, 0.0, 0.0, [self._zeros(layer, d) for layer in self.layers], outers)
        self._pooled = [self._zeros(layer, d, d) for layer in self.layers] if self.second_moments == "pooled" else None

    def _resolve_devices(self, device: DeviceSpec) -> dict[int, torch.device]:
        if isinstance(device, Mapping):
            mapping = {int(layer): torch.device(value) for layer, value in device.items()}
            missing = [layer for layer in self.layers if layer not in mapping]
            if missing:
                raise ValueError(f"device maps blocks {sorted(mapping)} but not blocks {missing}")
            return {layer: mapping[layer] for layer in self.layers}
        return dict.fromkeys(self.layers, torch.device(device))

    def _zeros(self, layer: int, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=torch.float64, device=self.devices[layer])

    # ------------------------------------------------------------------------------------------------ feeding

    def has_second_moments(self, cls: str) -> bool:
        """Whether class ``cls`` keeps its own ``Σw·xxᵀ`` (and so has a :meth:`covariance`)."""
        self._check_class(cls)
        return self.second_moments == "both" or (self.second_moments == "compliance" and cls == COMPLIANCE)

    def has_pooled_second_moments(self) -> bool:
        """Whether :meth:`pooled_covariance` is available (``second_moments`` ``"pooled"`` or ``"both"``)."""
        return self.second_moments in ("pooled", "both")

    def layer_device(self, layer: int) -> torch.device:
        """The device of block ``layer``'s sums."""
        return self.devices[self.layers[self.layer_position(layer)]]

    def update(
        self,
        activations: torch.Tensor | Mapping[int, torch.Tensor],
        is_refusal: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> None:
        """Add a batch of activations whose classes and weights are already known.

        Args:
            activations: ``[n, L, d]`` (or ``[n, d]`` when there is one layer), or ``{block: [n, d]}`` with one
                entry per block (each may live on its block's device); any float dtype and device. The batch is
                reduced on each block's statistics device in float32 (float64 input: float64) around its class
                means and merged into the float64 sums (see the module docstring).
            is_refusal: bool ``[n]``, ``True`` = refusal side.
            weights: non-negative ``[n]``; ``None`` means 1. Zero-weight samples are skipped.

        Raises:
            ValueError: on a shape mismatch, non-finite activations or negative weights (nothing is added then).
        """
        blocks = self._check_activations(activations)
        n = next(iter(blocks.values())).shape[0]
        side = _as_labels(is_refusal, n).cpu()
        if weights is None:
            w = torch.ones(n, dtype=torch.float64)
        else:
            w = _as_vector(weights, "weights", n)
            if bool((w < 0).any()):
                raise ValueError("weights must be non-negative")
        for cls, mask in ((REFUSAL, side), (COMPLIANCE, ~side)):
            mask = mask & (w > 0)
            if not bool(mask.any()):
                continue
            rows = mask.nonzero().squeeze(1)
            wm = w[rows]
            total = float(wm.sum())
            moments = self._moments[cls]
            moments.count += int(rows.numel())
            moments.weight_sum += total
            moments.weight_sq_sum += float((wm * wm).sum())
            for position, layer in enumerate(self.layers):
                x = blocks[layer]
                x = x[rows.to(x.device)]
                w_local = wm.to(x.device)
                s = w_local @ x.to(torch.float64)  # Σw·x in float64: [d]
                moments.sums[position].add_(s)
                targets = []
                if moments.outers is not None:
                    targets.append(moments.outers[position])
                if self._pooled is not None:
                    targets.append(self._pooled[position])
                if targets:
                    _add_outer_products(targets, x, w_local, total, s)

    def add(
        self,
        activations: torch.Tensor | Mapping[int, torch.Tensor],
        *,
        labels: ArrayLike | None = None,
        scores: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> None:
        """Add a batch given labels or refusal-confidence scores (this object's thresholds and weighting).

        Args:
            activations: ``[n, L, d]`` (or ``[n, d]`` with one layer, or ``{block: [n, d]}``).
            labels: booleans ``[n]`` (``True`` = refusal).
            scores: refusal-confidence scores in ``[-1, 1]``, ``[n]``; neutral samples are dropped when no
                labels are given.
            sample_weight: optional non-negative extra weights ``[n]``.
        """
        blocks = self._check_activations(activations)
        n = next(iter(blocks.values())).shape[0]
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
        self.update(blocks, assignment.is_refusal, weights)

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def nbytes(self) -> int:
        """Memory held by the sums, in bytes (independent of the number of samples; equals
        :func:`statistics_nbytes` of ``len(layers)``, ``hidden_size`` and ``second_moments``)."""
        tensors = [t for moments in self._moments.values() for t in moments.sums + (moments.outers or [])]
        tensors += self._pooled or []
        return sum(t.numel() * t.element_size() for t in tensors)

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
            float64 ``[d]`` on the block's statistics device.

        Raises:
            ValueError: when the class is empty or the layer unknown.
        """
        index = self.layer_position(layer)
        moments = self._nonempty(cls)
        return moments.sums[index] / moments.weight_sum

    def covariance(self, cls: str, layer: int) -> torch.Tensor:
        """Unbiased weighted covariance of class ``cls`` at block ``layer`` (reliability weights).

        ``Σ = (Σw·xxᵀ − Σw·μμᵀ) / (Σw − Σw²/Σw)``; equals ``numpy.cov(x.T, aweights=w)``.

        Returns:
            float64 ``[d, d]``, symmetric, on the block's statistics device.

        Raises:
            ValueError: when the class has no second moments, fewer than 2 samples, or a degenerate weighting.
        """
        index = self.layer_position(layer)
        moments = self._nonempty(cls)
        if moments.outers is None:
            raise ValueError(
                f"these statistics keep no second moments for the {cls} class (second_moments="
                f"{self.second_moments!r}); collect with second_moments='both' or 'compliance'"
            )
        if moments.count < 2:
            raise ValueError(f"the {cls} class needs at least 2 samples for a covariance, has {moments.count}")
        denominator = moments.weight_sum - moments.weight_sq_sum / moments.weight_sum
        if not denominator > 0:
            raise ValueError(f"the weights of the {cls} class leave no degrees of freedom for a covariance")
        mean = moments.sums[index] / moments.weight_sum
        cov = moments.outers[index].clone()
        cov.addr_(mean, mean, alpha=-moments.weight_sum)
        cov /= denominator
        return torch.add(cov, cov.T).mul_(0.5)

    def pooled_covariance(self, layer: int) -> torch.Tensor:
        """Pooled within-class covariance at block ``layer``: each class centred on its own mean,

        ``Σ_pooled = Σ_k (Σw·xxᵀ_k − Σw_k·μ_kμ_kᵀ) / Σ_k (Σw_k − Σw²_k/Σw_k)``; with unit weights
        ``((n_r − 1)·Σ_r + (n_c − 1)·Σ_c) / (n − 2)``.

        Returns:
            float64 ``[d, d]``, symmetric, on the block's statistics device.

        Raises:
            ValueError: without pooled second moments, with an empty class, or with no degrees of freedom.
        """
        index = self.layer_position(layer)
        if not self.has_pooled_second_moments():
            raise ValueError(
                f"these statistics keep no pooled second moments (second_moments={self.second_moments!r}); "
                "collect with second_moments='pooled' or 'both'"
            )
        parts = [self._nonempty(cls) for cls in CLASSES]
        denominator = sum(m.weight_sum - m.weight_sq_sum / m.weight_sum for m in parts)
        if not denominator > 0:
            raise ValueError("the classes leave no degrees of freedom for a pooled covariance")
        if self._pooled is not None:
            cov = self._pooled[index].clone()
        else:
            cov = parts[0].outers[index] + parts[1].outers[index]
        for moments in parts:
            mean = moments.sums[index] / moments.weight_sum
            cov.addr_(mean, mean, alpha=-moments.weight_sum)
        cov /= denominator
        return torch.add(cov, cov.T).mul_(0.5)

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
            New statistics (neither input is modified), on this object's devices.

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
            out.sums = [x + y.to(x.device) for x, y in zip(a.sums, b.sums, strict=True)]
            if a.outers is not None:
                out.outers = [x + y.to(x.device) for x, y in zip(a.outers, b.outers, strict=True)]
        if self._pooled is not None:
            merged._pooled = [x + y.to(x.device) for x, y in zip(self._pooled, other._pooled, strict=True)]
        return merged

    def __add__(self, other: ActivationStatistics) -> ActivationStatistics:
        return self.merge(other)

    def all_reduce(self) -> ActivationStatistics:
        """Sum these statistics over the processes of the active ``torch.distributed`` group, in place.

        Each process holds the statistics of its own shard of prompts; afterwards every process holds the
        statistics of all of them (an exact merge, like :meth:`merge`). Each block's tensors are reduced one at a
        time (staged through the backend's device when they live elsewhere). A no-op for a single process.

        Returns:
            ``self``.
        """
        from steering_adapter.utils.distributed import all_reduce_sum_, is_distributed

        if not is_distributed():
            return self
        scalars = torch.tensor(
            [[m.count, m.weight_sum, m.weight_sq_sum] for m in (self._moments[cls] for cls in CLASSES)],
            dtype=torch.float64,
        )
        all_reduce_sum_(scalars)
        for row, cls in enumerate(CLASSES):
            moments = self._moments[cls]
            moments.count = int(scalars[row, 0])
            moments.weight_sum = float(scalars[row, 1])
            moments.weight_sq_sum = float(scalars[row, 2])
            for tensor in moments.sums + (moments.outers or []):
                all_reduce_sum_(tensor)
        for tensor in self._pooled or []:
            all_reduce_sum_(tensor)
        return self

    # ------------------------------------------------------------------------------------------------ storage

    def save(self, path: str | Path) -> Path:
        """Write the sums to ``path`` (safetensors, one tensor per block) and the rest to the JSON file next to it.

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
            for position, layer in enumerate(self.layers):
                tensors[f"{cls}.sum.{layer}"] = moments.sums[position].detach().cpu().contiguous()
                if moments.outers is not None:
                    tensors[f"{cls}.outer.{layer}"] = moments.outers[position].detach().cpu().contiguous()
            classes[cls] = {
                "count": moments.count,
                "weight_sum": moments.weight_sum,
                "weight_sq_sum": moments.weight_sq_sum,
            }
        for position, layer in enumerate(self.layers if self._pooled is not None else []):
            tensors[f"pooled.outer.{layer}"] = self._pooled[position].detach().cpu().contiguous()
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
    def load(cls, path: str | Path, device: DeviceSpec = "cpu") -> ActivationStatistics:
        """Read statistics written by :meth:`save` (format 2, or format 1 with tensors stacked over blocks).

        Args:
            path: the safetensors file (or its JSON sidecar).
            device: where to put the sums (one device or ``{block: device}``).
        """
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        elif path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        info = json.loads(path.with_suffix(".json").read_text())
        version = info.get("format_version")
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"unsupported statistics format version {version!r} in {path}")
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
        tensors = load_file(str(path))

        def block(name: str, position: int, layer: int) -> torch.Tensor:
            tensor = tensors[name][position] if version == 1 else tensors[f"{name}.{layer}"]
            return tensor.to(device=stats.devices[layer], dtype=torch.float64)

        for name in CLASSES:
            moments = stats._moments[name]
            moments.count = int(info["classes"][name]["count"])
            moments.weight_sum = float(info["classes"][name]["weight_sum"])
            moments.weight_sq_sum = float(info["classes"][name]["weight_sq_sum"])
            moments.sums = [block(f"{name}.sum", i, layer) for i, layer in enumerate(stats.layers)]
            if moments.outers is not None:
                moments.outers = [block(f"{name}.outer", i, layer) for i, layer in enumerate(stats.layers)]
        if stats._pooled is not None:
            stats._pooled = [block("pooled.outer", i, layer) for i, layer in enumerate(stats.layers)]
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
            device=dict(self.devices),
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

    def _check_activations(self, activations: torch.Tensor | Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """``{block: [n, d]}`` on each block's device, float32 or float64; raises before anything is added."""
        expected = (len(self.layers), self.hidden_size)
        if isinstance(activations, Mapping):
            given = {int(layer): torch.as_tensor(value) for layer, value in activations.items()}
            if sorted(given) != sorted(self.layers):
                raise ValueError(f"activations are given for blocks {sorted(given)}, expected {sorted(self.layers)}")
            shapes = {tuple(value.shape) for value in given.values()}
            if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] != self.hidden_size:
                raise ValueError(
                    f"activations per block must all have shape [n, {self.hidden_size}], got {sorted(shapes)}"
                )
        else:
            acts = torch.as_tensor(activations)
            if acts.ndim == 2 and len(self.layers) == 1:
                acts = acts[:, None, :]
            if acts.ndim != 3 or tuple(acts.shape[1:]) != expected:
                raise ValueError(
                    f"activations must have shape [n, {expected[0]}, {expected[1]}] (samples, layers, hidden), "
                    f"got {tuple(acts.shape)}"
                )
            given = {layer: acts[:, position] for position, layer in enumerate(self.layers)}
        blocks = {}
        for layer in self.layers:
            value = given[layer]
            if value.is_complex() or value.dtype == torch.bool:
                raise ValueError(f"activations must hold real numbers, got dtype {value.dtype}")
            compute = torch.promote_types(value.dtype, torch.float32)
            value = value.to(device=self.devices[layer], dtype=compute)
            if value.device.type != "meta" and not bool(torch.isfinite(value).all()):  # meta: shapes only, no values
                raise ValueError("activations contain non-finite values (NaN or inf)")
            blocks[layer] = value
        return blocks


def _add_outer_products(
    targets: list[torch.Tensor], x: torch.Tensor, weights: torch.Tensor, total: float, s: torch.Tensor
) -> None:
    """Add ``Σw·xxᵀ`` of one class's batch to each float64 ``[d, d]`` target, through the shifted identity.

    Args:
        targets: float64 ``[d, d]`` running sums (on ``x``'s device).
        x: ``[m, d]`` activations in the reduction dtype (float32, or float64).
        weights: float64 ``[m]`` positive weights.
        total: ``Σw``.
        s: float64 ``[d]``, ``Σw·x``.
    """
    w = weights.to(x.dtype)
    shift = (w @ x) / total  # the batch's class mean, rounded to the reduction dtype: an exact, local shift c
    centred = x - shift
    weighted = centred * w[:, None]
    rows = scratch_rows(x.shape[1])
    for start in range(0, x.shape[1], rows):
        block = weighted[:, start : start + rows].T @ centred  # [rows, d] in float32: Σw·(x−c)(x−c)ᵀ
        for target in targets:
            target[start : start + rows].add_(block)
    c = shift.to(torch.float64)
    s_centred = s - total * c  # Σw·(x − c) in float64
    left, right = torch.stack([c, s_centred], dim=1), torch.stack([s, c])  # [d, 2], [2, d]
    for target in targets:  # Σw·xxᵀ = Σw·(x−c)(x−c)ᵀ + c·sᵀ + s_c·cᵀ: one rank-2 float64 update
        target.addmm_(left, right)
