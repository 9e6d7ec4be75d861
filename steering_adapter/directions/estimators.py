"""Refusal directions from activations: MD, RMD and WRMD, as scikit-learn-style estimators.

All three contrast the refusal side (prompts the model refuses, ``c > 0.1``) with the compliance side
(``c < −0.1``) at one decoder block:

- :class:`MeanDifference` (MD): ``v = μ_r − μ_c``.
- :class:`RidgeMeanDifference` (RMD): ``v = (Σ_c + λI)⁻¹ (μ_r − μ_c)``, where ``Σ_c`` is the covariance of the
  **compliance** activations only (method doc, section 4): directions along which ordinary, answered prompts
  vary a lot are damped, so the vector does not push the model along its normal variation. The system is
  solved in float64 by Cholesky; no inverse is ever formed.
- :class:`WeightedRidgeMeanDifference` (WRMD): RMD where each sample carries the judge's confidence, refusal
  ``w = max(c, ε)`` and compliance ``w = max(−c, ε)``, in both the means and the covariance.

Each estimator is fitted from activations (:meth:`~RidgeMeanDifference.fit`) or from streaming statistics
(:meth:`~RidgeMeanDifference.fit_statistics`) and exposes ``direction_`` (float32 ``[d]``) in one of two units:

- ``units="raw"`` (default): the closed form as is. MD is in activation units; RMD/WRMD in "activation units per
  variance", so their norm depends on the model and on λ and a steering scale α has no portable meaning.
- ``units="separation"``: ``s·u`` with ``u`` the unit direction and ``s = u·(μ_r − μ_c)`` the classes' mean
  separation along ``u`` at that block (for MD this is the mean difference itself). Adding ``α·s·u`` with
  ``α = −1`` moves the refused prompts' mean onto the complied prompts' mean along ``u``, on any model and at any
  block: the unit adapters record as ``steering_metadata["vector_units"] = "class_separation"``.

``unit_direction_`` (``u``) and ``separation_`` (``s``) are set in both cases. The linear algebra (ridge solve,
separation units) is in :mod:`steering_adapter.directions.linear_algebra`; fitting every block of streaming statistics
and the one-call form in :mod:`steering_adapter.directions.fitting`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator

from steering_adapter.directions.labels import (
    COMPLIANCE,
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_EPSILON,
    DEFAULT_REFUSAL_THRESHOLD,
    REFUSAL,
    ArrayLike,
    assign_labels,
    validate_epsilon,
    validate_thresholds,
)
from steering_adapter.directions.linear_algebra import as_matrix, ridge_solve, separation_units
from steering_adapter.directions.moments import StatisticsSpec
from steering_adapter.directions.statistics import ActivationStatistics

Method = Literal["md", "rmd", "wrmd"]
LambdaMode = Literal["absolute", "relative"]
Units = Literal["raw", "separation"]
Covariance = Literal["compliance", "pooled"]

UNITS = ("raw", "separation")
COVARIANCES = ("compliance", "pooled")
# steering_metadata["vector_units"] value of each estimator unit (docs/adapter-format.md, "Vector units")
VECTOR_UNITS = {"raw": "raw", "separation": "class_separation"}


def _split_target(y: ArrayLike | None, scores: ArrayLike | None) -> tuple[torch.Tensor | None, ArrayLike | None]:
    """``y`` as labels (bool / 0-1 integers) or as scores (floats); returns ``(labels, scores)``."""
    if y is None:
        return None, scores
    target = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if target.dtype == torch.bool or not (target.is_floating_point() or target.is_complex()):
        return target, scores
    if target.is_complex():
        raise ValueError("y must hold booleans (True = refusal) or refusal-confidence scores")
    if scores is not None:
        raise ValueError("y holds float scores and scores= is also given; pass boolean labels as y, or only scores")
    return None, target


class DirectionEstimator(BaseEstimator):
    """The base of :class:`MeanDifference`, :class:`RidgeMeanDifference` and :class:`WeightedRidgeMeanDifference`.

    Holds the shared fitting logic (:meth:`fit`, :meth:`fit_statistics`, :meth:`required_statistics`); subclasses
    set whether they use a covariance and how samples are weighted. Not meant to be used directly.
    """

    _weighting: ClassVar[str] = "none"
    _uses_covariance: ClassVar[bool] = False
    covariance: Covariance = "compliance"

    # parameters every subclass has
    refusal_threshold: float
    compliance_threshold: float
    units: Units

    def _validate_params(self) -> None:
        validate_thresholds(self.refusal_threshold, self.compliance_threshold)
        if self.units not in UNITS:
            raise ValueError(f"unknown units {self.units!r}; expected one of {UNITS}")

    def _epsilon(self) -> float:
        return DEFAULT_EPSILON

    def required_statistics(self) -> StatisticsSpec:
        """What :meth:`fit_statistics` reads: the weighting and the only second moments worth collecting.

        MD needs the class means only (``second_moments="none"``); RMD the compliance covariance (or, with
        ``covariance="pooled"``, one pooled matrix); WRMD the same with confidence weights. Collecting nothing else
        keeps the statistics at ``8 · L · (2·d + k·d²)`` bytes with ``k`` = 0 or 1
        (:func:`~steering_adapter.directions.moments.statistics_nbytes`).
        """
        if not self._uses_covariance:
            return StatisticsSpec(weighting=self._weighting, second_moments="none")
        return StatisticsSpec(weighting=self._weighting, second_moments=self.covariance)

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        scores: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> DirectionEstimator:
        """Fit the direction from activations at one block.

        Args:
            X: activations ``[n, d]`` (torch or numpy, any float dtype; computed in float64).
            y: booleans ``[n]`` (``True`` = refusal; 0/1 integers also work) or float refusal-confidence
                scores in ``[-1, 1]``. With scores, ``c > refusal_threshold`` is refusal,
                ``c < compliance_threshold`` compliance, and the neutral rest (and NaN = unscored) is dropped.
            scores: refusal-confidence scores ``[n]``. Used for the labels when ``y`` is not given, and by
                WRMD for the confidence weights (then ``y`` may give the labels explicitly).
            sample_weight: optional non-negative extra weights ``[n]`` (multiplied into WRMD's confidences);
                zero-weight samples are dropped.

        Returns:
            ``self``, with ``direction_`` etc. set.

        Raises:
            ValueError: for non-finite or mis-shaped inputs, one-class labels, an empty class, fewer than 2
                compliance samples (RMD/WRMD), or bad parameters.
        """
        self._validate_params()
        X = as_matrix(X)
        n = X.shape[0]
        if n == 0:
            raise ValueError("X is empty (no samples)")
        labels, scores = _split_target(y, scores)
        assignment = assign_labels(
            n,
            labels=labels,
            scores=scores,
            sample_weight=sample_weight,
            refusal_threshold=self.refusal_threshold,
            compliance_threshold=self.compliance_threshold,
            weighting=self._weighting,
            epsilon=self._epsilon(),
        )
        if labels is not None:
            kinds = set(assignment.is_refusal[assignment.keep].tolist())
            if len(kinds) == 1:
                only = REFUSAL if kinds == {True} else COMPLIANCE
                raise ValueError(f"y contains only one class (every sample is {only}); both classes are needed")
        for cls in (REFUSAL, COMPLIANCE):
            if assignment.count(cls) == 0:
                hint = ""
                if labels is None:
                    hint = (
                        f" after dropping neutral scores between {self.compliance_threshold} and "
                        f"{self.refusal_threshold} (pass booleans if y holds 0/1 labels)"
                    )
                elif sample_weight is not None:
                    hint = " with a positive sample_weight"
                raise ValueError(f"no {cls} samples{hint}; both classes are needed")
        # One computation of means and covariances: the in-memory activations go through the same float64
        # statistics as streamed ones (each batch centred on its class means before its outer products).
        stats = ActivationStatistics(
            layers=[0],
            hidden_size=X.shape[1],
            weighting=self._weighting,
            epsilon=self._epsilon(),
            second_moments=self.required_statistics().second_moments,
            device=X.device,
        )
        weights = torch.where(assignment.keep, assignment.weights, torch.zeros_like(assignment.weights))
        stats.update(X, assignment.is_refusal, weights)
        return self.fit_statistics(stats, 0)

    def fit_statistics(self, stats: ActivationStatistics, layer: int | None = None) -> DirectionEstimator:
        """Fit the direction from streaming statistics at one block.

        Args:
            stats: :class:`~steering_adapter.directions.statistics.ActivationStatistics`; MD and RMD need statistics
                collected with ``weighting="none"``, WRMD with ``weighting="confidence"`` and the same
                ``epsilon``; see :meth:`required_statistics` for the second moments.
            layer: the block index; may be omitted when the statistics hold a single layer.

        Returns:
            ``self``.

        Raises:
            ValueError: for a weighting mismatch, an unknown layer, an empty class, or too few compliance
                samples.
        """
        self._validate_params()
        if layer is None:
            if len(stats.layers) != 1:
                raise ValueError(f"the statistics hold layers {stats.layers}; pass layer=... to choose one")
            layer = stats.layers[0]
        if stats.weighting != self._weighting:
            wanted = "confidence" if self._weighting == "confidence" else "none"
            raise ValueError(
                f"{type(self).__name__} needs statistics collected with weighting={wanted!r}, "
                f"got weighting={stats.weighting!r}"
            )
        if self._weighting == "confidence" and stats.epsilon != self._epsilon():
            raise ValueError(
                f"the statistics were weighted with epsilon={stats.epsilon}, this estimator has "
                f"epsilon={self._epsilon()}"
            )
        for cls in (REFUSAL, COMPLIANCE):
            if stats.count(cls) == 0:
                raise ValueError(f"no {cls} samples in the statistics; both classes are needed")
        mean_r = stats.mean(REFUSAL, layer)
        mean_c = stats.mean(COMPLIANCE, layer)
        cov_c = None
        if self._uses_covariance:
            cov_c = (
                stats.pooled_covariance(layer) if self.covariance == "pooled" else stats.covariance(COMPLIANCE, layer)
            )
        return self._finish(mean_r, mean_c, cov_c, stats.count(REFUSAL), stats.count(COMPLIANCE))

    def _effective_lambda(self, covariance: torch.Tensor) -> float:
        return 0.0

    def _finish(
        self,
        mean_r: torch.Tensor,
        mean_c: torch.Tensor,
        cov_c: torch.Tensor | None,
        n_refusal: int,
        n_compliance: int,
    ) -> DirectionEstimator:
        difference = mean_r - mean_c
        if cov_c is None:
            direction, lam = difference, 0.0
        else:
            lam = self._effective_lambda(cov_c)
            direction = ridge_solve(cov_c, lam, difference)
        unit, separation = separation_units(direction, difference)
        self.unit_direction_ = unit.to(torch.float32)
        self.separation_ = separation
        self.direction_ = (separation * unit if self.units == "separation" else direction).to(torch.float32)
        self.mean_refusal_ = mean_r
        self.mean_compliance_ = mean_c
        self.n_refusal_ = n_refusal
        self.n_compliance_ = n_compliance
        self.lambda_ = lam
        self.n_features_in_ = int(difference.shape[0])
        return self


class MeanDifference(DirectionEstimator):
    """Difference of class means, ``v = μ_r − μ_c`` (MD).

    Args:
        refusal_threshold: with scores, ``c > refusal_threshold`` is the refusal side.
        compliance_threshold: with scores, ``c < compliance_threshold`` is the compliance side.
        units: ``"raw"`` (the closed form) or ``"separation"`` (``s·u``, see the module docstring).

    Attributes:
        direction_: float32 ``[d]``, the direction in ``units``.
        unit_direction_: float32 ``[d]``, ``u``, the direction normalised to length 1.
        separation_: ``s = u·(μ_r − μ_c)``, the classes' mean separation along ``u``.
        mean_refusal_: float64 ``[d]``, (weighted) mean of the refusal side.
        mean_compliance_: float64 ``[d]``, (weighted) mean of the compliance side.
        n_refusal_: number of refusal samples used.
        n_compliance_: number of compliance samples used.
        lambda_: effective ridge λ, ``0.0`` for MD.
        n_features_in_: ``d``.
    """

    def __init__(
        self,
        refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
        compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
        units: Units = "raw",
    ) -> None:
        self.refusal_threshold = refusal_threshold
        self.compliance_threshold = compliance_threshold
        self.units = units


class RidgeMeanDifference(DirectionEstimator):
    """Ridge-whitened mean difference, ``v = (Σ_c + λI)⁻¹ (μ_r − μ_c)`` (RMD).

    ``Σ_c`` is the unbiased covariance of the **compliance** activations only (reliability-weighted when
    sample weights are given), as in the method description; it needs at least 2 compliance samples. With
    ``covariance="pooled"`` it is the pooled within-class covariance of both classes instead (each centred on its
    own mean). The system is solved in float64 with a Cholesky factorisation, never an explicit inverse.

    Args:
        ridge_lambda: ``λ > 0``. With ``lambda_mode="absolute"`` it is added to the diagonal as is.
        lambda_mode: ``"absolute"`` or ``"relative"``; relative uses ``λ · trace(Σ_c) / d``, i.e. ``λ`` times
            the mean variance, which is comparable across layers and models whose activation scales differ.
        refusal_threshold: with scores, ``c > refusal_threshold`` is the refusal side.
        compliance_threshold: with scores, ``c < compliance_threshold`` is the compliance side.
        units: ``"raw"`` (the closed form) or ``"separation"`` (``s·u``, see the module docstring).
        covariance: ``"compliance"`` (the method's ``Σ_c``) or ``"pooled"`` (pooled within-class covariance).

    Attributes:
        direction_: float32 ``[d]``, the direction in ``units``.
        unit_direction_: float32 ``[d]``, ``u``, the direction normalised to length 1.
        separation_: ``s = u·(μ_r − μ_c)``, the classes' mean separation along ``u``.
        mean_refusal_: float64 ``[d]``.
        mean_compliance_: float64 ``[d]``.
        n_refusal_: number of refusal samples used.
        n_compliance_: number of compliance samples used.
        lambda_: the effective λ added to the diagonal.
        n_features_in_: ``d``.
    """

    _uses_covariance = True

    def __init__(
        self,
        ridge_lambda: float = 0.1,
        lambda_mode: LambdaMode = "absolute",
        refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
        compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
        units: Units = "raw",
        covariance: Covariance = "compliance",
    ) -> None:
        self.ridge_lambda = ridge_lambda
        self.lambda_mode = lambda_mode
        self.refusal_threshold = refusal_threshold
        self.compliance_threshold = compliance_threshold
        self.units = units
        self.covariance = covariance

    def _validate_params(self) -> None:
        super()._validate_params()
        if not (isinstance(self.ridge_lambda, numbers.Real) and math.isfinite(self.ridge_lambda)):
            raise ValueError(f"ridge_lambda must be a finite number, got {self.ridge_lambda!r}")
        if self.ridge_lambda <= 0:
            raise ValueError(f"ridge_lambda must be > 0, got {self.ridge_lambda}")
        if self.lambda_mode not in ("absolute", "relative"):
            raise ValueError(f"unknown lambda_mode {self.lambda_mode!r}; expected 'absolute' or 'relative'")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"unknown covariance {self.covariance!r}; expected one of {COVARIANCES}")

    def _effective_lambda(self, covariance: torch.Tensor) -> float:
        if self.lambda_mode == "absolute":
            return float(self.ridge_lambda)
        mean_variance = float(torch.diagonal(covariance).sum()) / covariance.shape[0]
        if not mean_variance > 0:
            raise ValueError(
                "the compliance covariance is zero (all compliance activations are equal), so a relative λ "
                "is undefined; use lambda_mode='absolute'"
            )
        return float(self.ridge_lambda) * mean_variance


class WeightedRidgeMeanDifference(RidgeMeanDifference):
    """RMD with judge-confidence weights in the means and the compliance covariance (WRMD).

    Refusal samples weigh ``max(c, ε)`` and compliance samples ``max(−c, ε)`` (times any ``sample_weight``),
    so prompts the judge is unsure about (or that are mislabelled relative to their score) count little.
    Fitting needs refusal-confidence scores ``c``: as float ``y`` or as ``scores=`` (then ``y`` may hold
    explicit labels).

    Args:
        ridge_lambda: ``λ > 0``, see :class:`RidgeMeanDifference`.
        lambda_mode: ``"absolute"`` or ``"relative"``, see :class:`RidgeMeanDifference`.
        epsilon: floor of the confidence weights (``> 0``).
        refusal_threshold: with scores as labels, ``c > refusal_threshold`` is the refusal side.
        compliance_threshold: with scores as labels, ``c < compliance_threshold`` is the compliance side.
        units: ``"raw"`` (the closed form) or ``"separation"`` (``s·u``, see the module docstring).
        covariance: ``"compliance"`` or ``"pooled"``, see :class:`RidgeMeanDifference`.

    Attributes:
        direction_: float32 ``[d]``, the direction in ``units``.
        unit_direction_: float32 ``[d]``, ``u``, the direction normalised to length 1.
        separation_: ``s = u·(μ_r − μ_c)``, the classes' mean separation along ``u``.
        mean_refusal_: float64 ``[d]``, confidence-weighted.
        mean_compliance_: float64 ``[d]``, confidence-weighted.
        n_refusal_: number of refusal samples used.
        n_compliance_: number of compliance samples used.
        lambda_: the effective λ added to the diagonal.
        n_features_in_: ``d``.
    """

    _weighting = "confidence"

    def __init__(
        self,
        ridge_lambda: float = 0.1,
        lambda_mode: LambdaMode = "absolute",
        epsilon: float = DEFAULT_EPSILON,
        refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
        compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
        units: Units = "raw",
        covariance: Covariance = "compliance",
    ) -> None:
        super().__init__(
            ridge_lambda=ridge_lambda,
            lambda_mode=lambda_mode,
            refusal_threshold=refusal_threshold,
            compliance_threshold=compliance_threshold,
            units=units,
            covariance=covariance,
        )
        self.epsilon = epsilon

    def _validate_params(self) -> None:
        super()._validate_params()
        validate_epsilon(self.epsilon)

    def _epsilon(self) -> float:
        return float(self.epsilon)


ESTIMATORS: Mapping[str, type[DirectionEstimator]] = {
    "md": MeanDifference,
    "rmd": RidgeMeanDifference,
    "wrmd": WeightedRidgeMeanDifference,
}


def make_estimator(method: Method, **params: Any) -> DirectionEstimator:
    """Build an estimator by short name.

    Args:
        method: ``"md"``, ``"rmd"`` or ``"wrmd"`` (case-insensitive).
        **params: constructor parameters (e.g. ``ridge_lambda=0.1``).

    Raises:
        ValueError: for an unknown method.
    """
    key = str(method).lower()
    if key not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[key](**params)
