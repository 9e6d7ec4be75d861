"""What a collection run produced (:class:`CollectionResult`) and its on-disk format.

A saved result is a directory: ``collection.json`` (layers, position, metadata, which files exist), the statistics
(``statistics.safetensors`` / ``.json`` and ``weighted_statistics.safetensors`` / ``.json``, see
:mod:`steering_adapter.directions.statistics_files`) and ``activations.safetensors`` (raw activations, classes and
scores, when present).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from steering_adapter.directions.statistics import ActivationStatistics

_FORMAT_VERSION = 1


@dataclass
class CollectionResult:
    """What a collection run produced.

    Attributes:
        layers: block indices, the order of the ``L`` axis.
        position: ``"last"`` or ``"mean"``.
        n_prompts: number of prompts given.
        stats: statistics with ``weighting="none"`` (for MD / RMD), or ``None``.
        weighted_stats: statistics with ``weighting="confidence"`` (for WRMD), or ``None``.
        activations: float32 ``[n_prompts, L, d]`` in prompt order when kept, else ``None``. With labels,
            prompts not used by the statistics (neutral) are still forwarded and kept here.
        is_refusal: bool ``[n_prompts]`` class of each prompt (meaningful where ``keep``), or ``None``
            unlabelled.
        keep: bool ``[n_prompts]``, ``False`` for neutral / zero-weight prompts, or ``None`` unlabelled.
        scores: float64 ``[n_prompts]`` refusal-confidence scores when given.
        metadata: provenance (model name, blocks path, system prompt, padding side, ...).
    """

    layers: list[int]
    position: str
    n_prompts: int
    stats: ActivationStatistics | None = None
    weighted_stats: ActivationStatistics | None = None
    activations: torch.Tensor | None = None
    is_refusal: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def layer_activations(self, layer: int) -> torch.Tensor:
        """Raw activations ``[n_prompts, d]`` at block ``layer``.

        Raises:
            ValueError: when activations were not kept or the layer was not collected.
        """
        if self.activations is None:
            raise ValueError("raw activations were not kept; collect with keep_activations=True")
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not collected (layers {self.layers})")
        return self.activations[:, self.layers.index(layer)]

    def save(self, directory: str | Path) -> Path:
        """Write the result to ``directory``.

        Files: ``collection.json`` (layers, position, metadata, which files exist);
        ``statistics.safetensors`` / ``.json`` and ``weighted_statistics.safetensors`` / ``.json`` if present;
        ``activations.safetensors`` (tensors ``activations`` float32 ``[n, L, d]``, ``is_refusal``, ``keep``,
        ``scores``, when present).

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        if self.stats is not None:
            files["stats"] = self.stats.save(directory / "statistics.safetensors").name
        if self.weighted_stats is not None:
            files["weighted_stats"] = self.weighted_stats.save(directory / "weighted_statistics.safetensors").name
        tensors = {
            name: value.detach().cpu().contiguous()
            for name, value in (
                ("activations", self.activations),
                ("is_refusal", self.is_refusal),
                ("keep", self.keep),
                ("scores", self.scores),
            )
            if value is not None
        }
        if tensors:
            save_file(tensors, str(directory / "activations.safetensors"))
            files["activations"] = "activations.safetensors"
        info = {
            "format_version": _FORMAT_VERSION,
            "layers": self.layers,
            "position": self.position,
            "n_prompts": self.n_prompts,
            "metadata": self.metadata,
            "files": files,
        }
        (directory / "collection.json").write_text(json.dumps(info, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> CollectionResult:
        """Read a result written by :meth:`save` (tensors on ``device``)."""
        directory = Path(directory)
        info = json.loads((directory / "collection.json").read_text())
        if info.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported collection format version {info.get('format_version')!r}")
        files = info["files"]
        tensors = (
            load_file(str(directory / files["activations"]), device=str(device)) if "activations" in files else {}
        )
        return cls(
            layers=list(info["layers"]),
            position=info["position"],
            n_prompts=int(info["n_prompts"]),
            stats=ActivationStatistics.load(directory / files["stats"], device) if "stats" in files else None,
            weighted_stats=(
                ActivationStatistics.load(directory / files["weighted_stats"], device)
                if "weighted_stats" in files
                else None
            ),
            activations=tensors.get("activations"),
            is_refusal=tensors.get("is_refusal"),
            keep=tensors.get("keep"),
            scores=tensors.get("scores"),
            metadata=info.get("metadata", {}),
        )
