"""Refusal directions from a model's activations: collection, statistics, estimators, diagnostics, conditions.

The pipeline stage between measuring (prompts scored for refusal) and building an adapter:

- :class:`ActivationCollector` / :func:`collect_activations` run the model over prompts and pool decoder-block
  outputs into streaming :class:`ActivationStatistics` (a :class:`CollectionResult`);
- :func:`assign_labels` turns refusal-confidence scores or labels into classes and weights;
- :class:`MeanDifference`, :class:`RidgeMeanDifference` and :class:`WeightedRidgeMeanDifference` (scikit-learn-style,
  built by name with :func:`make_estimator`) fit a direction per block (:func:`fit_directions`,
  :func:`compute_direction`); :func:`mix_directions` combines prompt- and answer-token directions;
- :func:`diagnose_directions` / :func:`diagnose_from_model` rank blocks (:class:`DirectionDiagnostics`);
- :func:`fit_condition` fits the direction and threshold of a condition-gated adapter (:class:`ConditionFit`).

The modules inside the package import each other directly, never this ``__init__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.utils.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from steering_adapter.directions.collection import ActivationCollector, collect_activations
    from steering_adapter.directions.collection_result import CollectionResult
    from steering_adapter.directions.conditions import ConditionFit, best_threshold, fit_condition
    from steering_adapter.directions.diagnostics import (
        DirectionDiagnostics,
        LayerDiagnostics,
        diagnose_directions,
        diagnose_from_model,
    )
    from steering_adapter.directions.direction_metrics import direction_dimensionality
    from steering_adapter.directions.estimators import (
        ESTIMATORS,
        MeanDifference,
        RidgeMeanDifference,
        WeightedRidgeMeanDifference,
        make_estimator,
    )
    from steering_adapter.directions.fitting import compute_direction, fit_directions
    from steering_adapter.directions.labels import LabelAssignment, assign_labels
    from steering_adapter.directions.linear_algebra import mix_directions, ridge_solve, separation_units
    from steering_adapter.directions.moments import StatisticsSpec, scratch_nbytes, statistics_nbytes
    from steering_adapter.directions.pooling import POSITIONS
    from steering_adapter.directions.statistics import ActivationStatistics

# public name -> the module that defines it, imported on first use (PEP 562)
_EXPORTS = {
    "ActivationCollector": "steering_adapter.directions.collection",
    "CollectionResult": "steering_adapter.directions.collection_result",
    "collect_activations": "steering_adapter.directions.collection",
    "POSITIONS": "steering_adapter.directions.pooling",
    "ActivationStatistics": "steering_adapter.directions.statistics",
    "StatisticsSpec": "steering_adapter.directions.moments",
    "statistics_nbytes": "steering_adapter.directions.moments",
    "scratch_nbytes": "steering_adapter.directions.moments",
    "LabelAssignment": "steering_adapter.directions.labels",
    "assign_labels": "steering_adapter.directions.labels",
    "MeanDifference": "steering_adapter.directions.estimators",
    "RidgeMeanDifference": "steering_adapter.directions.estimators",
    "WeightedRidgeMeanDifference": "steering_adapter.directions.estimators",
    "ESTIMATORS": "steering_adapter.directions.estimators",
    "make_estimator": "steering_adapter.directions.estimators",
    "fit_directions": "steering_adapter.directions.fitting",
    "compute_direction": "steering_adapter.directions.fitting",
    "ridge_solve": "steering_adapter.directions.linear_algebra",
    "separation_units": "steering_adapter.directions.linear_algebra",
    "mix_directions": "steering_adapter.directions.linear_algebra",
    "DirectionDiagnostics": "steering_adapter.directions.diagnostics",
    "LayerDiagnostics": "steering_adapter.directions.diagnostics",
    "diagnose_directions": "steering_adapter.directions.diagnostics",
    "diagnose_from_model": "steering_adapter.directions.diagnostics",
    "direction_dimensionality": "steering_adapter.directions.direction_metrics",
    "ConditionFit": "steering_adapter.directions.conditions",
    "best_threshold": "steering_adapter.directions.conditions",
    "fit_condition": "steering_adapter.directions.conditions",
}

__all__ = [
    "ActivationCollector",
    "CollectionResult",
    "collect_activations",
    "POSITIONS",
    "ActivationStatistics",
    "StatisticsSpec",
    "statistics_nbytes",
    "scratch_nbytes",
    "LabelAssignment",
    "assign_labels",
    "MeanDifference",
    "RidgeMeanDifference",
    "WeightedRidgeMeanDifference",
    "ESTIMATORS",
    "make_estimator",
    "fit_directions",
    "compute_direction",
    "ridge_solve",
    "separation_units",
    "mix_directions",
    "DirectionDiagnostics",
    "LayerDiagnostics",
    "diagnose_directions",
    "diagnose_from_model",
    "direction_dimensionality",
    "ConditionFit",
    "best_threshold",
    "fit_condition",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
