"""Fitting refusal directions: one estimator per block of streaming statistics, or one call from activations.

:func:`fit_directions` fits a clone of an MD / RMD / WRMD estimator at every block of an
:class:`~steering_adapter.directions.statistics.ActivationStatistics`; :func:`compute_direction` is the functional
form for the activations of both sides at one block.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from sklearn.base import clone

from steering_adapter.directions.estimators import (
    ESTIMATORS,
    Covariance,
    DirectionEstimator,
    LambdaMode,
    MeanDifference,
    Method,
    RidgeMeanDifference,
    Units,
)
from steering_adapter.directions.labels import ArrayLike
from steering_adapter.directions.linear_algebra import as_matrix
from steering_adapter.directions.statistics import ActivationStatistics


def fit_directions(
    estimator: DirectionEstimator, stats: ActivationStatistics, layers: Iterable[int] | None = None
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
    refusal = as_matrix(refusal_acts, "refusal_acts")
    compliant = as_matrix(compliant_acts, "compliant_acts")
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
        estimator: DirectionEstimator = MeanDifference(units=units)
    else:
        # WRMD with given weights is RMD with those weights in the means and the covariance.
        estimator = RidgeMeanDifference(
            ridge_lambda=ridge_lambda, lambda_mode=lambda_mode, units=units, covariance=covariance
        )
    return estimator.fit(X, y, sample_weight=sample_weight).direction_
