"""Steering adapters read for a vLLM engine: the files, validated by this package's own reader, as plain tensors.

vLLM never sees PEFT: its workers build their own model classes. This module reads each adapter folder or Hub repo
with :mod:`steering_adapter.tuner.files` (safetensors only, every vector checked against the config) into an
:class:`AdapterVectors`, checks it against the engine's model (hidden size, depth) and turns an ordered list of them
into the per-block plan the hooks apply (:func:`steering_adapter.tuner.layer.build_plan`, the same plan the PEFT
tuner builds). Nothing here imports vLLM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from steering_adapter.adapter.composition import COMPOSITION_FILE
from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.files import (
    CONDITION_PARAM,
    VECTOR_PARAM,
    WEIGHTS_NAME,
    load_vectors_file,
    require_safetensors,
    validate_vectors,
    vector_key,
)
from steering_adapter.tuner.validation import validate_adapter_folder

__all__ = ["AdapterSpec", "AdapterVectors", "parse_adapter_specs", "read_adapter", "write_adapter"]

_KEY = re.compile(rf"^base_model\.model\.(?P<path>.+)\.(?P<layer>\d+)\.(?:{VECTOR_PARAM}|{CONDITION_PARAM})$")


@dataclass(frozen=True)
class AdapterSpec:
    """Which adapter to attach and how.

    Attributes:
        path: adapter folder or Hub repo id (``org/name``).
        name: the adapter's name in the engine (default: the folder name or repo id).
        scale: replaces the config's ``scale`` α when given (``layer_scales`` still apply).
        revision: Hub revision.
    """

    path: str
    name: str | None = None
    scale: float | None = None
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (what ``model_loader_extra_config`` carries)."""
        return {"path": self.path, "name": self.name, "scale": self.scale, "revision": self.revision}


def parse_adapter_specs(raw: Any) -> list[AdapterSpec]:
    """Adapter specs from plain values: a path, a ``{"path", "name", "scale", "revision"}`` dict, or a list of them.

    Raises:
        ValueError: an entry of another type, an unknown key, or duplicate names.
    """
    entries = raw if isinstance(raw, (list, tuple)) else [raw]
    specs: list[AdapterSpec] = []
    for entry in entries:
        if isinstance(entry, AdapterSpec):
            specs.append(entry)
        elif isinstance(entry, (str, Path)):
            specs.append(AdapterSpec(path=str(entry)))
        elif isinstance(entry, Mapping):
            unknown = sorted(set(entry) - {"path", "name", "scale", "revision"})
            if unknown or "path" not in entry:
                raise ValueError(
                    f"steering adapter entry {dict(entry)!r}: expected keys path (required), name, scale, revision"
                    + (f"; unknown {unknown}" if unknown else "")
                )
            scale = entry.get("scale")
            if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
                raise ValueError(f"steering adapter {entry['path']!r}: scale must be a number, got {scale!r}")
            specs.append(
                AdapterSpec(
                    path=str(entry["path"]),
                    name=entry.get("name"),
                    scale=None if scale is None else float(scale),
                    revision=entry.get("revision"),
                )
            )
        else:
            raise ValueError(f"steering adapter entry must be a path or a dict, got {type(entry).__name__}")
    names = [spec.name or spec.path for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"steering adapter names must be unique, got {names}; give each a name")
    return specs


@dataclass
class AdapterVectors:
    """One steering adapter as plain tensors.

    Attributes:
        name: its name in the engine.
        config: the validated :class:`SteeringConfig` (``scale`` already overridden when the spec gave one).
        vectors: ``{block: float32 [hidden_size]}``.
        condition: float32 ``[hidden_size]`` condition vector of a gated adapter, else ``None``.
        source: where it was read from (for messages).
    """

    name: str
    config: SteeringConfig
    vectors: dict[int, torch.Tensor]
    condition: torch.Tensor | None
    source: str

    @property
    def gated(self) -> bool:
        return self.config.gated

    def step(self, layer: int, gate: Any = None) -> tuple[str, torch.Tensor, str, float, Any] | None:
        """The ``(name, vector, mode, factor, gate)`` step of :func:`~steering_adapter.tuner.layer.build_plan` for
        block ``layer``, or ``None`` when the adapter does not steer it."""
        if layer not in self.vectors:
            return None
        return self.name, self.vectors[layer], self.config.mode, self.config.effective_scale(layer), gate


def _blocks_path(keys: Sequence[str], source: str) -> str:
    paths = set()
    for key in keys:
        match = _KEY.match(key)
        if match is None:
            raise ValueError(
                f"{source}: tensor {key!r} is not a steering tensor (expected "
                f"'base_model.model.<blocks path>.<i>.{VECTOR_PARAM}')"
            )
        paths.add(match["path"])
    if len(paths) != 1:
        raise ValueError(f"{source}: tensors name {len(paths)} different block lists {sorted(paths)}")
    return paths.pop()


def read_adapter(spec: AdapterSpec, hidden_size: int, num_hidden_layers: int) -> AdapterVectors:
    """Read and validate one adapter for a model of ``hidden_size`` and ``num_hidden_layers`` blocks.

    Args:
        spec: which adapter.
        hidden_size: the engine model's hidden size.
        num_hidden_layers: its number of decoder blocks.

    Returns:
        The :class:`AdapterVectors`.

    Raises:
        ValueError: not a steering adapter (or a composition folder), pickle-only weights, a config that does not fit
            the model (naming both numbers), missing / extra / non-finite / misshapen vectors.
    """
    source = f"steering adapter {spec.path!r}"
    hub = {"revision": spec.revision} if spec.revision else {}
    if Path(spec.path, COMPOSITION_FILE).is_file():
        raise ValueError(
            f"{spec.path} is a composition folder: pass its parts (parts/<name>) as a list of adapters in the "
            "order to apply them instead"
        )
    # the check every loader runs (config keys and fields, safetensors, finite vectors, ablation directions)
    config = validate_adapter_folder(spec.path, **hub)
    weights = require_safetensors(spec.path, **hub)
    if spec.scale is not None:
        config.scale = spec.scale
    for field, model_value in (("hidden_size", hidden_size), ("num_hidden_layers", num_hidden_layers)):
        value = getattr(config, field)
        if value is not None and value != model_value:
            raise ValueError(
                f"{source} has {field}={value} but the engine's model has {field}={model_value}: the vectors were "
                "computed on a different model"
            )
    config.hidden_size, config.num_hidden_layers = hidden_size, num_hidden_layers
    config.validate()
    if not config.layers:
        raise ValueError(f"{source}: layers is empty")
    state = load_vectors_file(weights)
    blocks_path = config.blocks_path or _blocks_path(list(state), source)
    vectors = validate_vectors(
        state, config.layers, blocks_path, hidden_size, source, config.condition_layer, mode=config.mode
    )
    condition = None
    if config.gated:
        condition = state[f"base_model.model.{blocks_path}.{config.condition_layer}.{CONDITION_PARAM}"].float()
    return AdapterVectors(
        name=spec.name or spec.path,
        config=config,
        vectors={layer: vector.float() for layer, vector in vectors.items()},
        condition=condition,
        source=spec.path,
    )


def write_adapter(
    directory: str | Path,
    vectors: Mapping[int, torch.Tensor],
    *,
    hidden_size: int,
    num_hidden_layers: int,
    condition: torch.Tensor | None = None,
    blocks_path: str = "model.layers",
    **config: Any,
) -> Path:
    """Write a steering adapter folder from vectors alone (no model at hand, e.g. beside a vLLM engine).

    Args:
        directory: the folder to create.
        vectors: ``{block: [hidden_size]}``.
        hidden_size: hidden size of the base model.
        num_hidden_layers: its number of decoder blocks.
        condition: the condition vector of a gated adapter (``config`` then holds ``condition_layer`` etc.).
        blocks_path: the transformers path of the decoder blocks in the saved keys (``model.layers`` for Llama,
            Qwen, Mistral, Gemma, ...).
        **config: other :class:`SteeringConfig` fields (``scale``, ``mode``, ``layer_scales``, ...).

    Returns:
        The folder; it loads with ``PeftModel.from_pretrained`` like any saved steering adapter.
    """
    directory = Path(directory)
    steering = SteeringConfig(
        layers=sorted(int(layer) for layer in vectors),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        **config,
    )
    tensors = {
        vector_key(blocks_path, int(layer)): vector.detach().float().cpu().contiguous()
        for layer, vector in vectors.items()
    }
    if condition is not None:
        if not steering.gated:
            raise ValueError("a condition vector needs condition_layer and condition_threshold in the config")
        key = f"base_model.model.{blocks_path}.{steering.condition_layer}.{CONDITION_PARAM}"
        tensors[key] = condition.detach().float().cpu().contiguous()
    validate_vectors(
        tensors, steering.layers, blocks_path, hidden_size, str(directory), steering.condition_layer, steering.mode
    )
    directory.mkdir(parents=True, exist_ok=True)
    steering.save_pretrained(str(directory))
    save_file(tensors, str(directory / WEIGHTS_NAME))
    return directory
