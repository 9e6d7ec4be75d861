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

``unit_direction_`` (``u``) and ``separation_`` (``s``) are set in both cases.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from steering_adapter.directions.statistics import (
    COMPLIANCE,
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_EPSILON,
    DEFAULT_REFUSAL_THRESHOLD,
    REFUSAL,
    ActivationStatistics,
    ArrayLike,
    StatisticsSpec,
    assign_labels,
    validate_epsilon,
    validate_thresholds,
)

Method = Literal["md", "rmd", "wrmd"]
LambdaMode = Literal["absolute", "relative"]
Units = Literal["raw", "separation"]
Covariance = Literal["compliance", "pooled"]

UNITS = ("raw", "separation")
COVARIANCES = ("compliance", "pooled")
# steering_metadata["vector_units"] value of each estimator unit (adapter-format.md, "Vector units")
VECTOR_UNITS = {"raw": "raw", "separation": "class_separation"}

__all__ = [
    "MeanDifference",
    "RidgeMeanDifference",
    "WeightedRidgeMeanDifference",
    "ESTIMATORS",
    "make_estimator",
    "compute_direction",
    "fit_directions",
    "ridge_solve",
    "separation_units",
    "mix_directions",
    "UNITS",
    "VECTOR_UNITS",
    "COVARIANCES",
]


def _as_matrix(X: ArrayLike, name: str = "X") -> torch.Tensor:
    tensor = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
    tensor = tensor.detach()
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_samples, hidden_size], got shape {tuple(tensor.shape)}")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return tensor


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


def ridge_solve(covariance: torch.Tensor, ridge_lambda: float, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``(Σ + λI) v = rhs`` in float64 by Cholesky (LU fallback if the factorisation fails numerically).

    Args:
        covariance: symmetric positive semi-definite ``[d, d]``.
        ridge_lambda: ``λ > 0``.
        rhs: ``[d]``.

    Returns:
        float64 ``[d]``, on the covariance's device.
    """
    if not (math.isfinite(ridge_lambda) and ridge_lambda > 0):
        raise ValueError(f"the ridge λ must be a finite number > 0, got {ridge_lambda}")
    system = covariance.to(torch.float64).clone()
    system.diagonal().add_(ridge_lambda)
    rhs = rhs.to(device=system.device, dtype=torch.float64)[:, None]
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        solution = torch.cholesky_solve(rhs, factor)
    else:  # numerically indefinite (λ tiny next to the covariance scale): fall back to LU
        del factor
        solution = torch.linalg.solve(system, rhs)
    solution = solution[:, 0]
    if not torch.isfinite(solution).all():
        raise ValueError(f"the ridge system is singular for λ={ridge_lambda}; use a larger ridge_lambda")
    return solution


def separation_units(direction: torch.Tensor, difference: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The unit direction ``u`` and the classes' mean separation along it, ``s = u·(μ_r − μ_c)``.

    Args:
        direction: ``[d]``, any estimator's direction (MD, RMD, WRMD).
        difference: ``[d]``, ``μ_r − μ_c`` (the means the estimator used).

    Returns:
        ``(u, s)``: float64 ``[d]`` of norm 1, and the float ``s``; ``s·u`` is the direction in separation units.

    Raises:
        ValueError: when the direction is zero (the class means coincide) or not finite, or when ``s <= 0`` (the
            direction does not point from the compliance mean towards the refusal mean).
    """
    direction = direction.to(torch.float64)
    norm = float(torch.linalg.vector_norm(direction))
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(
            f"the direction has norm {norm}: the refusal and compliance means coincide, so there is no direction"
        )
    unit = direction / norm
    separation = float(unit @ difference.to(device=unit.device, dtype=torch.float64))
    if not separation > 0:
        raise ValueError(
            f"the classes' mean separation along the direction is {separation:.3g} (must be > 0): the direction does "
            "not point from the compliance mean towards the refusal mean"
        )
    return unit, separation


def mix_directions(
    prompt_direction: ArrayLike, answer_direction: ArrayLike, difference: ArrayLike, answer_scale: float
) -> torch.Tensor:
    """One steering vector from a direction fitted at prompt tokens and one fitted at answer tokens.

    A steering vector is added at every position, the prompt's tokens and the generated ones. A direction fitted on
    prompt activations reads the refusal where the model decides it; one fitted on the model's own answer tokens
    (``position="answer"``) reads how a refusal goes on being written. The two can be close to orthogonal (on the
    censored SmolLM2, cosine 0.02–0.07), so the first alone pushes generated tokens away from a refusal only
    indirectly. The result is the prompt direction in separation units plus a push of ``ρ`` times its length along
    the answer direction: ``s·(û_p + ρ·û_a)`` with ``s = û_p·(μ_r − μ_c)``, so ``α = −1`` still moves the refused
    prompts' mean onto the complied prompts' mean along ``û_p``.

    Args:
        prompt_direction: ``[d]``, the direction at prompt tokens (any norm).
        answer_direction: ``[d]``, the direction at answer tokens (any norm).
        difference: ``[d]``, ``μ_r − μ_c`` of the prompt activations (the unit of the result).
        answer_scale: ``ρ >= 0``; ``0`` gives the prompt direction in separation units.

    Returns:
        float32 ``[d]``.

    Raises:
        ValueError: ``ρ`` negative or not finite, mismatched sizes, a zero or non-finite direction, or a prompt
            direction along which the refused prompts do not lie beyond the complied ones (``s <= 0``).
    """
    rho = float(answer_scale)
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"answer_scale must be a finite number >= 0, got {answer_scale!r}")
    vectors = [
        _as_matrix(
            (v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).reshape(1, -1), name
        )[0]
        for v, name in (
            (prompt_direction, "prompt_direction"),
            (answer_direction, "answer_direction"),
            (difference, "difference"),
        )
    ]
    prompt, answer, diff = vectors
    if not prompt.shape == answer.shape == diff.shape:
        raise ValueError(
            f"prompt_direction, answer_direction and difference differ in size: {prompt.shape[0]}, {answer.shape[0]}, "
            f"{diff.shape[0]}"
        )
    unit, separation = separation_units(prompt, diff)
    answer_norm = torch.linalg.vector_norm(answer)
    if answer_norm == 0:
        raise ValueError("answer_direction is zero")
    return (separation * (unit + rho * answer / answer_norm)).to(torch.float32)


class _DirectionEstimator(BaseEstimator):
    """Shared fitting logic; subclasses set what they use."""

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
        (:func:`~steering_adapter.directions.statistics.statistics_nbytes`).
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
    ) -> _DirectionEstimator:
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
        X = _as_matrix(X)
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

    def fit_statistics(self, stats: ActivationStatistics, layer: int | None = None) -> _DirectionEstimator:
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
    ) -> _DirectionEstimator:
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


class MeanDifference(_DirectionEstimator):
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


class RidgeMeanDifference(_DirectionEstimator):
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


ESTIMATORS: Mapping[str, type[_DirectionEstimator]] = {
    "md": MeanDifference,
    "rmd": RidgeMeanDifference,
    "wrmd": WeightedRidgeMeanDifference,
}


def make_estimator(method: Method, **params: Any) -> _DirectionEstimator:
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


def fit_directions(
    estimator: _DirectionEstimator, stats: ActivationStatistics, layers: Iterable[int] | None = None
) -> dict[int, torch.Tensor]:
    """Fit one clone of ``estimator`` per layer of ``stats``.

    Args:
        estimator: an unfitted (or fitted; it is cloned) MD / RMD / WRMD estimator.
        stats: streaming statistics.
        layers: block indices to fit; default all layers of ``stats``.

    Returns:
        ``{layer: direction}``, each float32 ``[d]``.
    """
    chosen = list(stats.layers if layers is None else layers)
    return {int(layer): clone(estimator).fit_statistics(stats, layer).direction_ for layer in chosen}


def compute_direction(
    refusal_acts: ArrayLike,
    compliant_acts: ArrayLike,
    method: Method = "md",
    ridge_lambda: float = 0.1,
    refusal_weights: ArrayLike | None = None,
    compliant_weights: ArrayLike | None = None,
    *,
    lambda_mode: LambdaMode = "absolute",
    units: Units = "raw",
    covariance: Covariance = "compliance",
) -> torch.Tensor:
    """The refusal direction from the activations of both sides at one block.

    Args:
        refusal_acts: activations of refused prompts ``[n_r, d]``.
        compliant_acts: activations of complied prompts ``[n_c, d]``.
        method: ``"md"`` (``μ_r − μ_c``), ``"rmd"`` (``(Σ_c + λI)⁻¹(μ_r − μ_c)``) or ``"wrmd"`` (RMD with
            weights in the means and in ``Σ_c``). ``Σ_c`` is the covariance of the compliance activations
            only.
        ridge_lambda: ``λ > 0`` for RMD / WRMD.
        refusal_weights: non-negative weights ``[n_r]``; for ``"wrmd"`` the judge confidences ``max(c, ε)``.
        compliant_weights: non-negative weights ``[n_c]``; for ``"wrmd"`` the confidences ``max(−c, ε)``.
            With ``"md"`` / ``"rmd"`` given weights are used too (weighted means and covariance).
        lambda_mode: ``"absolute"`` or ``"relative"`` (``λ · trace(Σ_c) / d``).
        units: ``"raw"`` returns the closed form above; ``"separation"`` returns ``s·u``, the unit direction ``u``
            times the classes' mean separation along it ``s = u·(μ_r − μ_c)``, so that ``α = −1`` moves the refused
            prompts' mean onto the complied prompts' mean along ``u`` (the same for MD).
        covariance: RMD / WRMD: ``"compliance"`` (``Σ_c``) or ``"pooled"`` (pooled within-class covariance).

    Returns:
        float32 ``[d]``, the direction in ``units``.

    Raises:
        ValueError: for an unknown method, an empty side, mismatched dimensions, non-finite values, fewer than
            2 compliance samples (RMD / WRMD), ``λ <= 0`` or missing WRMD weights.
    """
    key = str(method).lower()
    if key not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(ESTIMATORS)}")
    refusal = _as_matrix(refusal_acts, "refusal_acts")
    compliant = _as_matrix(compliant_acts, "compliant_acts")
    if refusal.shape[0] == 0:
        raise ValueError("refusal_acts is empty (no refusal samples)")
    if compliant.shape[0] == 0:
        raise ValueError("compliant_acts is empty (no compliance samples)")
    if refusal.shape[1] != compliant.shape[1]:
        raise ValueError(
            f"refusal_acts and compliant_acts have different hidden sizes: {refusal.shape[1]} vs {compliant.shape[1]}"
        )
    if key == "wrmd" and (refusal_weights is None or compliant_weights is None):
        raise ValueError("method='wrmd' needs refusal_weights and compliant_weights (judge confidences)")
    X = torch.cat([refusal, compliant.to(refusal.device)])
    y = torch.cat([torch.ones(refusal.shape[0], dtype=torch.bool), torch.zeros(compliant.shape[0], dtype=torch.bool)])
    sample_weight = None
    if refusal_weights is not None or compliant_weights is not None:
        parts = []
        for weights, n, name in (
            (refusal_weights, refusal.shape[0], "refusal_weights"),
            (compliant_weights, compliant.shape[0], "compliant_weights"),
        ):
            if weights is None:
                w = torch.ones(n, dtype=torch.float64)
            elif isinstance(weights, torch.Tensor):
                w = weights.detach().cpu()
            else:
                w = torch.as_tensor(np.asarray(weights))
            if w.ndim != 1 or w.shape[0] != n:
                raise ValueError(f"{name} must have shape [{n}], got {tuple(w.shape)}")
            parts.append(w.to(torch.float64))
        sample_weight = torch.cat(parts)
    if key == "md":
        estimator: _DirectionEstimator = MeanDifference(units=units)
    else:
        # WRMD with given weights is RMD with those weights in the means and the covariance.
        estimator = RidgeMeanDifference(
            ridge_lambda=ridge_lambda, lambda_mode=lambda_mode, units=units, covariance=covariance
        )
    return estimator.fit(X, y, sample_weight=sample_weight).direction_
