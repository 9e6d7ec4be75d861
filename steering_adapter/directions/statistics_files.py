"""The on-disk format of :class:`~steering_adapter.directions.statistics.ActivationStatistics`.

The float64 sums go to a safetensors file, one tensor per block: ``{class}.sum.{block}`` (``[d]``),
``{class}.outer.{block}`` (``[d, d]``, for the classes that keep second moments) and ``pooled.outer.{block}``
(``[d, d]``, pooled second moments). Everything else (layers, hidden size, weighting, thresholds, metadata, counts and
weight sums per class) goes to the JSON file next to it, with the same stem and the suffix ``.json``. Format 1, still
read, stacked the tensors over blocks (``{class}.sum``: ``[L, d]``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from steering_adapter.directions.labels import CLASSES
from steering_adapter.directions.moments import ClassMoments

FORMAT_VERSION = 2  # 1: tensors stacked over blocks ([L, d], [L, d, d]); 2: one tensor per block


def write_statistics(
    path: str | Path,
    settings: Mapping[str, Any],
    moments: Mapping[str, ClassMoments],
    pooled: list[torch.Tensor] | None,
) -> Path:
    """Write the sums to ``path`` (safetensors) and the rest to the JSON file next to it.

    Args:
        path: file name; ``.safetensors`` is appended when missing.
        settings: ``layers`` and the other constructor fields of the statistics (JSON-serialisable), in the order
            they are written.
        moments: ``{class: ClassMoments}`` for both classes.
        pooled: per block, float64 ``[d, d]`` pooled second moments, or ``None``.

    Returns:
        The path of the safetensors file.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = settings["layers"]
    tensors: dict[str, torch.Tensor] = {}
    classes: dict[str, dict[str, Any]] = {}
    for cls in CLASSES:
        sums = moments[cls]
        for position, layer in enumerate(layers):
            tensors[f"{cls}.sum.{layer}"] = sums.sums[position].detach().cpu().contiguous()
            if sums.outers is not None:
                tensors[f"{cls}.outer.{layer}"] = sums.outers[position].detach().cpu().contiguous()
        classes[cls] = {
            "count": sums.count,
            "weight_sum": sums.weight_sum,
            "weight_sq_sum": sums.weight_sq_sum,
        }
    for position, layer in enumerate(layers if pooled is not None else []):
        tensors[f"pooled.outer.{layer}"] = pooled[position].detach().cpu().contiguous()
    save_file(tensors, str(path), metadata={"format": "steering_adapter.ActivationStatistics"})
    info = {"format_version": FORMAT_VERSION, **settings, "classes": classes, "tensors": path.name}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_settings(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Read the JSON half of statistics written by :func:`write_statistics`.

    Args:
        path: the safetensors file (or its JSON sidecar).

    Returns:
        ``(tensors_path, info)``: the safetensors file's path and the JSON content.

    Raises:
        ValueError: for an unsupported format version.
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    elif path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    info = json.loads(path.with_suffix(".json").read_text())
    version = info.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"unsupported statistics format version {version!r} in {path}")
    return path, info


def read_sums(
    path: Path,
    info: Mapping[str, Any],
    layers: list[int],
    devices: Mapping[int, torch.device],
    second_moments: Mapping[str, bool],
    pooled: bool,
) -> tuple[dict[str, ClassMoments], list[torch.Tensor] | None]:
    """Read the sums of statistics written by :func:`write_statistics` (format 1 or 2).

    Args:
        path: the safetensors file (as returned by :func:`read_settings`).
        info: the JSON content (as returned by :func:`read_settings`).
        layers: the block indices.
        devices: ``{block: device}``, where each block's sums go.
        second_moments: ``{class: bool}``, whether the class keeps its ``Σw·xxᵀ``.
        pooled: whether pooled second moments are kept.

    Returns:
        ``({class: ClassMoments}, pooled)``: the float64 sums on each block's device.
    """
    version = info.get("format_version")
    tensors = load_file(str(path))

    def block(name: str, position: int, layer: int) -> torch.Tensor:
        tensor = tensors[name][position] if version == 1 else tensors[f"{name}.{layer}"]
        return tensor.to(device=devices[layer], dtype=torch.float64)

    moments = {}
    for name in CLASSES:
        moments[name] = ClassMoments(
            count=int(info["classes"][name]["count"]),
            weight_sum=float(info["classes"][name]["weight_sum"]),
            weight_sq_sum=float(info["classes"][name]["weight_sq_sum"]),
            sums=[block(f"{name}.sum", i, layer) for i, layer in enumerate(layers)],
            outers=(
                [block(f"{name}.outer", i, layer) for i, layer in enumerate(layers)] if second_moments[name] else None
            ),
        )
    pooled_sums = [block("pooled.outer", i, layer) for i, layer in enumerate(layers)] if pooled else None
    return moments, pooled_sums
