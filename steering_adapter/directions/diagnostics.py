"""Per-layer diagnostics of refusal directions: separability, correlation with the score, spread, plots.

For each layer ``ℓ`` with direction ``v_ℓ`` and prompt activations ``h_ℓ(x)`` (method doc, sections 5-6):

- projection ``p(x) = ⟨h_ℓ(x), v̂_ℓ⟩`` of every prompt on the unit direction ``v̂ = v / ‖v‖``;
- ROC AUC of ``p`` for refused (positive) vs complied prompts (``sklearn.metrics.roc_auc_score``);
- Pearson ``r`` between ``p`` and the refusal-confidence score ``c`` over every prompt with a (non-NaN) score,
  neutral ones included, when scores are given;
- ``‖v‖₂``;
- ``coords_90``: the smallest number of coordinates holding 90% of ``‖v‖²`` (coverage configurable);
- participation ratio ``PR = (Σᵢ vᵢ²)² / Σᵢ vᵢ⁴ = ‖v‖₂⁴ / ‖v‖₄⁴``, from 1 (one coordinate) to ``d`` (all
  equal): the effective number of coordinates the direction is spread over.

:func:`diagnose_directions` computes them from kept activations ``[n, L, d]``; :func:`diagnose_from_model` computes
the same from the model without keeping activations: one forward pass records ``h·v̂`` per prompt and block
(``n × L`` numbers), and a second pass reads the best block's activations of the labelled prompts for the PCA scatter
(``n × d`` numbers, one block). Both return a :class:`DirectionDiagnostics`; :meth:`DirectionDiagnostics.save` writes
``diagnostics.json`` and PNG plots (:mod:`steering_adapter.directions.diagnostics_plots`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from steering_adapter.directions.diagnostics_plots import plot_diagnostics
from steering_adapter.directions.direction_metrics import (
    direction_dimensionality,
    direction_norms,
    directions_matrix,
    to_numpy,
)
from steering_adapter.directions.labels import (
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_REFUSAL_THRESHOLD,
    ArrayLike,
    assign_labels,
)
from steering_adapter.utils.records import json_safe

DIAGNOSTICS_FILE = "diagnostics.json"


@dataclass
class LayerDiagnostics:
    """Diagnostics of one layer's direction.

    Attributes:
        layer: block index.
        auc: ROC AUC of the projection, refused (positive) vs complied; ``None`` without both classes.
        pearson_r: Pearson r of the projection with the refusal score; ``None`` without scores or when either
            is constant.
        norm: ``‖v‖₂``.
        coords_90: smallest number of coordinates whose squares hold ``coverage`` (default 90%) of ``‖v‖²``.
        coords_90_fraction: ``coords_90 / d``.
        participation_ratio: ``(Σ v²)² / Σ v⁴``, between 1 and ``d``.
        mean_projection_refusal: mean projection of refused prompts (``None`` if there are none).
        mean_projection_compliance: mean projection of complied prompts (``None`` if there are none).
    """

    layer: int
    auc: float | None
    pearson_r: float | None
    norm: float
    coords_90: int
    coords_90_fraction: float
    participation_ratio: float
    mean_projection_refusal: float | None = None
    mean_projection_compliance: float | None = None


@dataclass
class DirectionDiagnostics:
    """Diagnostics of all layers, plus what the plots need.

    Attributes:
        layers: one :class:`LayerDiagnostics` per layer, in layer order.
        hidden_size: ``d``.
        coverage: the ``‖v‖²`` fraction used for ``coords_90``.
        projections: float64 ``[n_prompts, L]`` projection of each prompt on each unit direction, or ``None``.
        is_refusal: bool ``[n_prompts]`` class per prompt (meaningful where ``keep``), or ``None``.
        keep: bool ``[n_prompts]``, ``False`` for neutral prompts, or ``None``.
        scores: float64 ``[n_prompts]`` refusal scores, or ``None``.
        pca_layer: layer of the 2-D PCA scatter (the best layer), or ``None``.
        pca_coords: ``[m, 2]`` PCA coordinates of the labelled prompts at ``pca_layer``, or ``None``.
        pca_is_refusal: bool ``[m]`` classes of those prompts, or ``None``.
        pca_explained_variance: explained-variance ratios of the two components, or ``None``.
    """

    layers: list[LayerDiagnostics]
    hidden_size: int
    coverage: float = 0.9
    projections: np.ndarray | None = None
    is_refusal: np.ndarray | None = None
    keep: np.ndarray | None = None
    scores: np.ndarray | None = None
    pca_layer: int | None = None
    pca_coords: np.ndarray | None = None
    pca_is_refusal: np.ndarray | None = None
    pca_explained_variance: list[float] | None = field(default=None)

    def layer(self, index: int) -> LayerDiagnostics:
        """The diagnostics of block ``index``.

        Raises:
            ValueError: when the layer was not diagnosed.
        """
        for entry in self.layers:
            if entry.layer == index:
                return entry
        raise ValueError(f"layer {index} was not diagnosed (layers {[e.layer for e in self.layers]})")

    def best_layers(self, k: int | None = None) -> list[int]:
        """Layers ranked by ``|pearson_r|`` (descending), ties and missing r broken by AUC (descending).

        Layers without r rank after those with one; layers with neither rank last, in layer order.

        Args:
            k: how many to return (default all).

        Returns:
            Block indices, best first.
        """

        def key(entry: LayerDiagnostics) -> tuple[float, float, int]:
            r = abs(entry.pearson_r) if entry.pearson_r is not None else -math.inf
            auc = entry.auc if entry.auc is not None else -math.inf
            return (-r, -auc, entry.layer)

        ranked = [entry.layer for entry in sorted(self.layers, key=key)]
        return ranked if k is None else ranked[:k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (arrays as lists)."""

        def listed(array: np.ndarray | None) -> list | None:
            return None if array is None else np.asarray(array).tolist()

        return {
            "hidden_size": self.hidden_size,
            "coverage": self.coverage,
            "participation_ratio_definition": "(sum v_i^2)^2 / sum v_i^4 = ||v||_2^4 / ||v||_4^4",
            "best_layers": self.best_layers(),
            "layers": [asdict(entry) for entry in self.layers],
            "projections": listed(self.projections),
            "is_refusal": listed(self.is_refusal),
            "keep": listed(self.keep),
            "scores": listed(self.scores),
            "pca": {
                "layer": self.pca_layer,
                "coords": listed(self.pca_coords),
                "is_refusal": listed(self.pca_is_refusal),
                "explained_variance_ratio": self.pca_explained_variance,
            },
        }

    def save(self, directory: str | Path, plots: bool = True) -> dict[str, Path]:
        """Write ``diagnostics.json`` and, with ``plots``, the PNG figures to ``directory``.

        Figures: ``separability.png`` (AUC and |r| vs layer), ``direction_norm.png`` (‖v‖ and participation
        ratio vs layer), ``pca_best_layer.png`` (2-D PCA of refusal vs compliance activations at the best
        layer, when available).

        Returns:
            ``{"json": path, "separability": path, ...}`` for the files written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = {"json": directory / DIAGNOSTICS_FILE}
        # unscored prompts have NaN scores: null in strict JSON (read back as NaN by load)
        written["json"].write_text(json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n")
        if plots:
            written.update(self._plot(directory))
        return written

    @classmethod
    def load(cls, path: str | Path) -> DirectionDiagnostics:
        """Read ``diagnostics.json`` (a file or the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / DIAGNOSTICS_FILE
        data = json.loads(path.read_text())

        def array(value: Any, dtype: Any) -> np.ndarray | None:
            return None if value is None else np.asarray(value, dtype=dtype)

        pca = data.get("pca", {})
        return cls(
            layers=[LayerDiagnostics(**entry) for entry in data["layers"]],
            hidden_size=int(data["hidden_size"]),
            coverage=float(data["coverage"]),
            projections=array(data.get("projections"), np.float64),
            is_refusal=array(data.get("is_refusal"), bool),
            keep=array(data.get("keep"), bool),
            scores=array(data.get("scores"), np.float64),
            pca_layer=pca.get("layer"),
            pca_coords=array(pca.get("coords"), np.float64),
            pca_is_refusal=array(pca.get("is_refusal"), bool),
            pca_explained_variance=pca.get("explained_variance_ratio"),
        )

    def _plot(self, directory: Path) -> dict[str, Path]:
        return plot_diagnostics(
            directory,
            layer_ids=[entry.layer for entry in self.layers],
            aucs=[np.nan if e.auc is None else e.auc for e in self.layers],
            abs_pearson_r=[np.nan if e.pearson_r is None else abs(e.pearson_r) for e in self.layers],
            norms=[e.norm for e in self.layers],
            participation_ratios=[e.participation_ratio for e in self.layers],
            hidden_size=self.hidden_size,
            pca_layer=self.pca_layer,
            pca_coords=self.pca_coords,
            pca_is_refusal=self.pca_is_refusal,
            pca_explained_variance=self.pca_explained_variance,
        )


def diagnose_directions(
    activations: ArrayLike | None,
    directions: ArrayLike | Mapping[int, ArrayLike],
    *,
    layers: Sequence[int] | None = None,
    labels: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
    compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
    coverage: float = 0.9,
    pca: bool = True,
) -> DirectionDiagnostics:
    """Per-layer diagnostics of refusal directions.

    Args:
        activations: prompt activations ``[n, L, d]`` (e.g. ``CollectionResult.activations``), or ``None`` for
            direction-only metrics (norm, coords_90, participation ratio).
        directions: ``[L, d]`` aligned with the ``L`` axis of ``activations``, or ``{layer: [d]}``.
        layers: block indices of the ``L`` axis (required with an array of directions unless ``0..L-1``).
        labels: booleans ``[n]`` (``True`` = refused) for the AUC; or
        scores: refusal-confidence scores ``[n]``; give the classes when ``labels`` is missing (thresholds
            below, neutral prompts excluded from the AUC) and always give Pearson r.
        refusal_threshold: ``c > refusal_threshold`` is refused.
        compliance_threshold: ``c < compliance_threshold`` is complied.
        coverage: ``‖v‖²`` fraction for ``coords_90``.
        pca: compute the 2-D PCA scatter at the best layer.

    Returns:
        The :class:`DirectionDiagnostics`.

    Raises:
        ValueError: on shape mismatches, unknown layers, non-finite values or a zero direction.
    """
    layer_ids, vectors = directions_matrix(directions, layers)
    n_layers, d = vectors.shape
    acts = None
    if activations is not None:
        acts = to_numpy(activations).astype(np.float64)
        if acts.ndim == 2 and n_layers == 1:
            acts = acts[:, None, :]
        if acts.ndim != 3 or acts.shape[1:] != (n_layers, d):
            raise ValueError(
                f"activations must have shape [n, {n_layers}, {d}] to match the directions, got {acts.shape}"
            )
        if not np.isfinite(acts).all():
            raise ValueError("activations contain non-finite values (NaN or inf)")
    if (labels is not None or scores is not None) and acts is None:
        raise ValueError("labels or scores need activations")
    norms = direction_norms(layer_ids, vectors)
    projections = None if acts is None else np.einsum("nld,ld->nl", acts, vectors / norms[:, None])

    def best_layer_points(layer: int, rows: np.ndarray) -> np.ndarray:
        return acts[rows, layer_ids.index(layer)]

    return _diagnose(
        layer_ids,
        vectors,
        projections,
        labels=labels,
        scores=scores,
        refusal_threshold=refusal_threshold,
        compliance_threshold=compliance_threshold,
        coverage=coverage,
        best_layer_points=best_layer_points if pca and acts is not None else None,
    )


def diagnose_from_model(
    collector: Any,
    prompts: Sequence[str],
    directions: Mapping[int, ArrayLike],
    *,
    labels: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
    compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
    coverage: float = 0.9,
    pca: bool = True,
) -> DirectionDiagnostics:
    """The diagnostics of :func:`diagnose_directions`, streamed from the model instead of kept activations.

    One forward pass over ``prompts`` records the projection of each prompt on each block's unit direction
    (:meth:`~steering_adapter.directions.collection.ActivationCollector.project`; float64 ``[n, L]``); with ``pca``, a
    second
    pass reads the best block's activations of the labelled prompts (float32 ``[m, d]``, one block). Memory: ``n·L``
    projections plus ``m·d`` for the scatter, instead of ``n·L·d``. Collective under ``torch.distributed``.

    Args:
        collector: an :class:`~steering_adapter.directions.collection.ActivationCollector` set up as for the statistics
            (same
            position, system prompt, template), whose layers include every block of ``directions``.
        prompts: the prompts (every one is projected; neutral ones count for Pearson r).
        directions: ``{block: [d]}``.
        labels: booleans ``[n]`` (``True`` = refused) for the AUC; or
        scores: refusal-confidence scores ``[n]`` (classes by the thresholds, and Pearson r).
        refusal_threshold: ``c > refusal_threshold`` is refused.
        compliance_threshold: ``c < compliance_threshold`` is complied.
        coverage: ``‖v‖²`` fraction for ``coords_90``.
        pca: compute the 2-D PCA scatter at the best layer (one more forward pass).

    Returns:
        The :class:`DirectionDiagnostics`.
    """
    layer_ids, vectors = directions_matrix(directions, None)
    direction_norms(layer_ids, vectors)
    prompts = list(prompts)
    projections = collector.project(prompts, dict(zip(layer_ids, torch.from_numpy(vectors), strict=True))).numpy()

    def best_layer_points(layer: int, rows: np.ndarray) -> np.ndarray:
        chosen = [prompts[i] for i in np.flatnonzero(rows)]
        return collector.layer_activations(chosen, layer).numpy().astype(np.float64)

    return _diagnose(
        layer_ids,
        vectors,
        projections,
        labels=labels,
        scores=scores,
        refusal_threshold=refusal_threshold,
        compliance_threshold=compliance_threshold,
        coverage=coverage,
        best_layer_points=best_layer_points if pca else None,
    )


def _diagnose(
    layer_ids: list[int],
    vectors: np.ndarray,
    projections: np.ndarray | None,
    *,
    labels: ArrayLike | None,
    scores: ArrayLike | None,
    refusal_threshold: float,
    compliance_threshold: float,
    coverage: float,
    best_layer_points: Callable[[int, np.ndarray], np.ndarray] | None,
) -> DirectionDiagnostics:
    """Everything from the projections ``[n, L]`` (or none) and, for the PCA, the best block's labelled activations."""
    d = vectors.shape[1]
    norms = direction_norms(layer_ids, vectors)
    is_refusal = keep = score_array = None
    if (labels is not None or scores is not None) and projections is not None:
        assignment = assign_labels(
            projections.shape[0],
            labels=labels,
            scores=scores,
            refusal_threshold=refusal_threshold,
            compliance_threshold=compliance_threshold,
        )
        is_refusal = assignment.is_refusal.numpy()
        keep = assignment.keep.numpy()
        if scores is not None:
            score_array = to_numpy(scores).astype(np.float64).ravel()

    entries = []
    for i, layer in enumerate(layer_ids):
        coords, ratio = direction_dimensionality(vectors[i], coverage)
        auc = r = mean_r = mean_c = None
        if projections is not None and is_refusal is not None:
            p = projections[:, i]
            positive, negative = keep & is_refusal, keep & ~is_refusal
            if positive.any():
                mean_r = float(p[positive].mean())
            if negative.any():
                mean_c = float(p[negative].mean())
            if positive.any() and negative.any():
                auc = float(roc_auc_score(is_refusal[keep], p[keep]))
            if score_array is not None:
                scored = np.isfinite(score_array)  # NaN = unscored prompt
                r = _pearson(p[scored], score_array[scored]) if scored.sum() >= 2 else None
        entries.append(
            LayerDiagnostics(
                layer=layer,
                auc=auc,
                pearson_r=r,
                norm=float(norms[i]),
                coords_90=coords,
                coords_90_fraction=coords / d,
                participation_ratio=ratio,
                mean_projection_refusal=mean_r,
                mean_projection_compliance=mean_c,
            )
        )
    result = DirectionDiagnostics(
        layers=entries,
        hidden_size=d,
        coverage=coverage,
        projections=projections,
        is_refusal=is_refusal,
        keep=keep,
        scores=score_array,
    )
    if best_layer_points is not None and keep is not None:
        labelled = keep
        if labelled.sum() >= 2 and is_refusal[labelled].any() and (~is_refusal[labelled]).any():
            best = result.best_layers(1)[0]
            points = best_layer_points(best, labelled)
            n_components = min(2, points.shape[0], d)
            model = PCA(n_components=n_components)
            coords = model.fit_transform(points)
            if n_components < 2:
                coords = np.pad(coords, ((0, 0), (0, 2 - n_components)))
            ratios = list(model.explained_variance_ratio_) + [0.0] * (2 - n_components)
            result.pca_layer = best
            result.pca_coords = coords
            result.pca_is_refusal = is_refusal[labelled]
            result.pca_explained_variance = [float(x) if np.isfinite(x) else 0.0 for x in ratios]
    return result


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    xc, yc = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    if denominator == 0:
        return None
    return float((xc * yc).sum() / denominator)
