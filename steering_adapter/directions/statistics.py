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


Memory, and how a batch is added in float32 around its class mean and merged into float64 sums, are described in
:mod:`steering_adapter.directions.moments`; the file format in :mod:`steering_adapter.directions.statistics_files`;
how scores and labels become classes and weights in :mod:`steering_adapter.directions.labels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steering_adapter.directions.labels import (
    CLASSES,
    COMPLIANCE,
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_EPSILON,
    DEFAULT_REFUSAL_THRESHOLD,
    REFUSAL,
    ArrayLike,
    Weighting,
    as_labels,
    as_vector,
    assign_labels,
    validate_epsilon,
    validate_thresholds,
)
from steering_adapter.directions.moments import (
    ClassMoments,
    DeviceSpec,
    SecondMoments,
    add_outer_products,
    check_activations,
    check_second_moments,
    resolve_devices,
)
from steering_adapter.directions.statistics_files import read_settings, read_sums, write_statistics
from steering_adapter.utils.distributed import all_reduce_sum_, is_distributed


@dataclass(eq=False)
class ActivationStatistics:
    """Streaming first and second moments of activations, per class and per block, in float64.

    Build empty statistics, feed batches with :meth:`update` (or :meth:`add`), combine runs with
    :meth:`merge` (or across processes with :meth:`all_reduce`), read :meth:`mean`, :meth:`covariance` and
    :meth:`pooled_covariance`, and :meth:`save` / :meth:`load` them.

    Memory: ``8 · L · (2·d + k·d²)`` bytes (see :func:`~steering_adapter.directions.moments.statistics_nbytes`);
    keep only the second moments the estimator needs (``second_moments="compliance"`` for RMD / WRMD, ``"none"`` for
    MD).

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
    _moments: dict[str, ClassMoments] = field(init=False, repr=False)
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
        check_second_moments(self.second_moments)
        validate_thresholds(self.refusal_threshold, self.compliance_threshold)
        validate_epsilon(self.epsilon)
        self.devices: dict[int, torch.device] = resolve_devices(self.device, self.layers)
        distinct = set(self.devices.values())
        self.device = next(iter(distinct)) if len(distinct) == 1 else dict(self.devices)
        d = self.hidden_size
        self._moments = {}
        for cls in CLASSES:
            outers = None
            if self.has_second_moments(cls):
                outers = [self._zeros(layer, d, d) for layer in self.layers]
            self._moments[cls] = ClassMoments(0, 0.0, 0.0, [self._zeros(layer, d) for layer in self.layers], outers)
        self._pooled = [self._zeros(layer, d, d) for layer in self.layers] if self.second_moments == "pooled" else None

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
                means and merged into the float64 sums (see :mod:`steering_adapter.directions.moments`).
            is_refusal: bool ``[n]``, ``True`` = refusal side.
            weights: non-negative ``[n]``; ``None`` means 1. Zero-weight samples are skipped.

        Raises:
            ValueError: on a shape mismatch, non-finite activations or negative weights (nothing is added then).
        """
        blocks = check_activations(activations, self.layers, self.hidden_size, self.devices)
        n = next(iter(blocks.values())).shape[0]
        side = as_labels(is_refusal, n).cpu()
        if weights is None:
            w = torch.ones(n, dtype=torch.float64)
        else:
            w = as_vector(weights, "weights", n)
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
                    add_outer_products(targets, x, w_local, total, s)

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
        blocks = check_activations(activations, self.layers, self.hidden_size, self.devices)
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
        :func:`~steering_adapter.directions.moments.statistics_nbytes` of ``len(layers)``, ``hidden_size`` and
        ``second_moments``)."""
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
        return write_statistics(path, self._settings(), self._moments, self._pooled)

    @classmethod
    def load(cls, path: str | Path, device: DeviceSpec = "cpu") -> ActivationStatistics:
        """Read statistics written by :meth:`save` (format 2, or format 1 with tensors stacked over blocks).

        Args:
            path: the safetensors file (or its JSON sidecar).
            device: where to put the sums (one device or ``{block: device}``).
        """
        path, info = read_settings(path)
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
        second_moments = {name: stats.has_second_moments(name) for name in CLASSES}
        stats._moments, stats._pooled = read_sums(
            path, info, stats.layers, stats.devices, second_moments, stats._pooled is not None
        )
        return stats

    # ------------------------------------------------------------------------------------------------ helpers

    def _settings(self) -> dict[str, Any]:
        """The constructor fields written next to the sums (all but ``device``), in file order."""
        return {
            "layers": self.layers,
            "hidden_size": self.hidden_size,
            "weighting": self.weighting,
            "epsilon": self.epsilon,
            "refusal_threshold": self.refusal_threshold,
            "compliance_threshold": self.compliance_threshold,
            "second_moments": self.second_moments,
            "metadata": self.metadata,
        }

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

    def _nonempty(self, cls: str) -> ClassMoments:
        self._check_class(cls)
        moments = self._moments[cls]
        if moments.count == 0 or moments.weight_sum <= 0:
            raise ValueError(f"the {cls} class is empty in these statistics")
        return moments
