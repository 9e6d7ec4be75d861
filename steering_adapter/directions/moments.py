"""The float64 moment sums behind :class:`~steering_adapter.directions.statistics.ActivationStatistics`: which are
kept, how much memory they take, and how a batch is added to them.

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
common offset (the massive activations of real LLMs) costs nothing. Measured bound
(``tests/directions/test_statistics.py``):
covariance relative error ≤ 1e-5 against a float64 reference with offsets 1000× the spread, where the plain
float32 sum ``Σxxᵀ`` loses every digit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from steering_adapter.directions.labels import Weighting

SecondMoments = Literal["both", "compliance", "pooled", "none"]
SECOND_MOMENTS: tuple[str, ...] = ("both", "compliance", "pooled", "none")
# number of [d, d] matrices per block for each setting
SECOND_MOMENT_MATRICES = {"both": 2, "compliance": 1, "pooled": 1, "none": 0}


def check_second_moments(second_moments: str) -> None:
    """Check that ``second_moments`` is one of :data:`SECOND_MOMENTS`.

    Raises:
        ValueError: otherwise.
    """
    if second_moments not in SECOND_MOMENTS:
        raise ValueError(f"unknown second_moments {second_moments!r}; expected one of {list(SECOND_MOMENTS)}")


def statistics_nbytes(n_layers: int, hidden_size: int, second_moments: SecondMoments = "both") -> int:
    """Bytes held by :class:`~steering_adapter.directions.statistics.ActivationStatistics`: ``8 · L · (2·d + k·d²)``.

    Args:
        n_layers: ``L``, the number of (candidate) blocks collected.
        hidden_size: ``d``.
        second_moments: ``"none"`` (``k = 0``), ``"compliance"`` or ``"pooled"`` (``k = 1``), ``"both"`` (``k = 2``).

    Returns:
        The bytes of every float64 sum; independent of the number of prompts and of the model's dtype.
    """
    check_second_moments(second_moments)
    k = SECOND_MOMENT_MATRICES[second_moments]
    return 8 * int(n_layers) * (2 * int(hidden_size) + k * int(hidden_size) ** 2)


def scratch_rows(hidden_size: int) -> int:
    """Rows of the float32 block in which a batch's outer products are formed: ``⌈d/8⌉``."""
    return max(1, math.ceil(int(hidden_size) / 8))


def scratch_nbytes(hidden_size: int, second_moments: SecondMoments = "both") -> int:
    """Transient bytes while a batch is added: one float32 ``[⌈d/8⌉, d]`` block (0 without second moments)."""
    check_second_moments(second_moments)
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
class ClassMoments:
    """The running sums of one class: ``count``, ``Σw``, ``Σw²``, ``Σw·x`` per block and, when kept, ``Σw·xxᵀ``.

    Attributes:
        count: number of samples added (with a positive weight).
        weight_sum: ``Σw``.
        weight_sq_sum: ``Σw²``.
        sums: per block, float64 ``[d]``: ``Σw·x``.
        outers: per block, float64 ``[d, d]``: ``Σw·xxᵀ`` of this class only; ``None`` when not kept.
    """

    count: int
    weight_sum: float
    weight_sq_sum: float
    sums: list[torch.Tensor]  # per block: [d]
    outers: list[torch.Tensor] | None  # per block: [d, d], this class only


DeviceSpec = torch.device | str | Mapping[int, torch.device | str]


def resolve_devices(device: DeviceSpec, layers: list[int]) -> dict[int, torch.device]:
    """The device of each block's sums.

    Args:
        device: one device for all blocks, or ``{block: device}`` covering every block of ``layers``.
        layers: the block indices.

    Returns:
        ``{block: device}`` in the order of ``layers``.

    Raises:
        ValueError: when a mapping leaves a block out.
    """
    if isinstance(device, Mapping):
        mapping = {int(layer): torch.device(value) for layer, value in device.items()}
        missing = [layer for layer in layers if layer not in mapping]
        if missing:
            raise ValueError(f"device maps blocks {sorted(mapping)} but not blocks {missing}")
        return {layer: mapping[layer] for layer in layers}
    return dict.fromkeys(layers, torch.device(device))


def check_activations(
    activations: torch.Tensor | Mapping[int, torch.Tensor],
    layers: list[int],
    hidden_size: int,
    devices: Mapping[int, torch.device],
) -> dict[int, torch.Tensor]:
    """A batch of activations as ``{block: [n, d]}`` on each block's device, in the reduction dtype.

    Args:
        activations: ``[n, L, d]`` (or ``[n, d]`` when there is one block), or ``{block: [n, d]}`` with one entry
            per block.
        layers: the block indices, the order of the ``L`` axis.
        hidden_size: ``d``.
        devices: ``{block: device}``, where each block is reduced.

    Returns:
        ``{block: [n, d]}``, float32 (float64 input: float64) on the block's device.

    Raises:
        ValueError: on a shape mismatch, non-real or non-finite values (before anything is added).
    """
    expected = (len(layers), hidden_size)
    if isinstance(activations, Mapping):
        given = {int(layer): torch.as_tensor(value) for layer, value in activations.items()}
        if sorted(given) != sorted(layers):
            raise ValueError(f"activations are given for blocks {sorted(given)}, expected {sorted(layers)}")
        shapes = {tuple(value.shape) for value in given.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] != hidden_size:
            raise ValueError(f"activations per block must all have shape [n, {hidden_size}], got {sorted(shapes)}")
    else:
        acts = torch.as_tensor(activations)
        if acts.ndim == 2 and len(layers) == 1:
            acts = acts[:, None, :]
        if acts.ndim != 3 or tuple(acts.shape[1:]) != expected:
            raise ValueError(
                f"activations must have shape [n, {expected[0]}, {expected[1]}] (samples, layers, hidden), "
                f"got {tuple(acts.shape)}"
            )
        given = {layer: acts[:, position] for position, layer in enumerate(layers)}
    blocks = {}
    for layer in layers:
        value = given[layer]
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"activations must hold real numbers, got dtype {value.dtype}")
        compute = torch.promote_types(value.dtype, torch.float32)
        value = value.to(device=devices[layer], dtype=compute)
        if value.device.type != "meta" and not bool(torch.isfinite(value).all()):  # meta: shapes only, no values
            raise ValueError("activations contain non-finite values (NaN or inf)")
        blocks[layer] = value
    return blocks


def add_outer_products(
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
