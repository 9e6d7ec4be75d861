"""Direction-only metrics (norm, spread over coordinates) and the checked ``[L, d]`` matrix they are computed on.

- ``‖v‖₂`` (:func:`direction_norms`);
- ``coords_90``: the smallest number of coordinates holding 90% of ``‖v‖²`` (coverage configurable), and the
  participation ratio ``PR = (Σᵢ vᵢ²)² / Σᵢ vᵢ⁴ = ‖v‖₂⁴ / ‖v‖₄⁴`` (:func:`direction_dimensionality`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from steering_adapter.directions.labels import ArrayLike


def direction_dimensionality(direction: ArrayLike, coverage: float = 0.9) -> tuple[int, float]:
    """How many coordinates carry a direction.

    Args:
        direction: ``[d]``.
        coverage: fraction of ``‖v‖²`` to cover, in ``(0, 1]``.

    Returns:
        ``(coords, participation_ratio)``: the smallest number of coordinates whose squares sum to at least
        ``coverage · ‖v‖²``, and ``(Σ v²)² / Σ v⁴``. A zero vector gives ``(0, 0.0)``.
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    v = to_numpy(direction).astype(np.float64).ravel()
    squares = v * v
    total = squares.sum()
    if total == 0:
        return 0, 0.0
    cumulative = np.cumsum(np.sort(squares)[::-1])
    # tolerance: with coverage=1 the last cumulative sum may differ from the total by rounding
    coords = int(np.searchsorted(cumulative, coverage * total * (1 - 1e-12), side="left")) + 1
    ratio = float(total**2 / (squares * squares).sum())
    return min(coords, v.size), ratio


def direction_norms(layer_ids: list[int], vectors: np.ndarray) -> np.ndarray:
    """``‖v‖₂`` of each direction, checked non-zero.

    Args:
        layer_ids: the blocks of the rows, for error messages.
        vectors: ``[L, d]``.

    Returns:
        ``[L]``.

    Raises:
        ValueError: when a direction is zero.
    """
    norms = np.linalg.norm(vectors, axis=1)
    if not (norms > 0).all():
        zero = [layer_ids[i] for i in np.flatnonzero(norms == 0)]
        raise ValueError(f"the directions of layers {zero} are zero")
    return norms


def to_numpy(values: Any) -> np.ndarray:
    """A tensor (float64 when floating, on CPU) or anything ``numpy.asarray`` takes, as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64 if values.is_floating_point() else values.dtype).numpy()
    return np.asarray(values)


def directions_matrix(
    directions: ArrayLike | Mapping[int, ArrayLike], layers: Sequence[int] | None
) -> tuple[list[int], np.ndarray]:
    """Directions as a checked float64 ``[L, d]`` matrix with the block of each row.

    Args:
        directions: ``[L, d]`` (or ``[d]``), or ``{layer: [d]}``.
        layers: the blocks of the rows (with a mapping: which entries, in that order); default ``0..L-1``, or the
            mapping's sorted keys.

    Returns:
        ``(layer_ids, matrix)``.

    Raises:
        ValueError: for missing or duplicate layers, an empty mapping, rows of different sizes, a wrong shape or
            non-finite values.
    """
    if isinstance(directions, Mapping):
        keys = sorted(int(k) for k in directions)
        if layers is not None:
            missing = [layer for layer in layers if layer not in directions]
            if missing:
                raise ValueError(f"no direction for layers {missing} (have {keys})")
            keys = [int(layer) for layer in layers]
        if not keys:
            raise ValueError("directions is empty")
        rows = [to_numpy(directions[k]).astype(np.float64).ravel() for k in keys]
        if len({row.size for row in rows}) != 1:
            raise ValueError("directions have different sizes")
        matrix = np.stack(rows)
    else:
        matrix = to_numpy(directions).astype(np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2:
            raise ValueError(f"directions must be [L, d] or a {{layer: [d]}} mapping, got shape {matrix.shape}")
        keys = list(range(matrix.shape[0])) if layers is None else [int(layer) for layer in layers]
        if len(keys) != matrix.shape[0]:
            raise ValueError(f"{len(keys)} layers given for {matrix.shape[0]} directions")
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate layers {keys}")
    if not np.isfinite(matrix).all():
        raise ValueError("directions contain non-finite values (NaN or inf)")
    return keys, matrix
