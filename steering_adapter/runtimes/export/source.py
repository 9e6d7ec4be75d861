"""The steering adapter an export starts from: its config, vectors, effective shifts, file hashes and provenance."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import torch

from steering_adapter.models.embedded import embedded_id, is_embedded
from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.files import (
    CONFIG_NAME,
    VECTOR_PARAM,
    WEIGHTS_NAME,
    load_vectors_file,
    require_safetensors,
    resolve_adapter_file,
    validate_vectors,
)
from steering_adapter.tuner.validation import validate_adapter_folder
from steering_adapter.utils.versions import __version__

_VECTOR_KEY = re.compile(rf"^base_model\.model\.(?P<path>.+)\.(?P<layer>\d+)\.{VECTOR_PARAM}$")


class NotExpressibleError(ValueError):
    """The adapter (or its base architecture) cannot be expressed exactly in the requested export format."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class SteeringSource:
    """A steering adapter read for export.

    Attributes:
        location: the folder or Hub repo id it was read from.
        config: its validated :class:`~steering_adapter.SteeringConfig`.
        vectors: ``{layer: v_i}``, float32 ``[hidden_size]`` each, as stored.
        blocks_path: decoder-blocks path of its saved keys (e.g. ``"model.layers"``).
        sha256: hex SHA-256 of ``adapter_config.json`` and ``adapter_model.safetensors``.
    """

    location: str
    config: SteeringConfig
    vectors: dict[int, torch.Tensor]
    blocks_path: str
    sha256: dict[str, str]

    @property
    def layers(self) -> list[int]:
        return list(self.config.layers)

    def deltas(self) -> dict[int, torch.Tensor]:
        """The shift each steered block output receives: ``{i: scale * s_i * v_i}``, float32 ``[hidden_size]``.

        Computed as the steering tuner computes it (the float32 vector times the float ``scale * s_i``), so the
        exported numbers are the ones the adapter adds.
        """
        return {
            layer: self.vectors[layer].to(torch.float32) * self.config.effective_scale(layer) for layer in self.layers
        }

    def require_additive(self, target: str) -> None:
        """Refuse adapters that are not a constant shift of the block outputs.

        Args:
            target: what is being written, for the message (e.g. ``"a llama.cpp control vector"``).

        Raises:
            NotExpressibleError: ablate mode (a projection that depends on the hidden state), condition gating (a
                per-sequence decision taken on the prompt), or positions other than every token.
        """
        config = self.config
        if config.mode != "add":
            raise NotExpressibleError(
                f"{self.location}: mode {config.mode!r} cannot be exported as {target}: directional ablation "
                "h - (h.u)u depends on each hidden state, while the export can only add a constant vector"
            )
        if config.gated:
            raise NotExpressibleError(
                f"{self.location}: condition-gated adapters cannot be exported as {target}: the gate decides per "
                f"sequence, from block {config.condition_layer}'s output on the prompt, whether to steer, while the "
                "export would steer every sequence unconditionally"
            )
        if config.positions != "all":
            raise NotExpressibleError(
                f"{self.location}: positions {config.positions!r} cannot be exported as {target}, which steers "
                "every token position"
            )

    def provenance(self, export_format: str, base_model: str | None = None) -> dict[str, Any]:
        """What the exported artefact came from, for its metadata.

        Args:
            export_format: ``"gguf"``, ``"lora"`` or ``"merged"``.
            base_model: where the base model was read from when it differs from the adapter's
                ``base_model_name_or_path`` (a local copy, say).

        Returns:
            A JSON-serialisable dict: base model and revision, layers, scale α, per-layer scales, the effective
            factor per layer, vector units, mode, dimensions, the source adapter and its file hashes.
        """
        config = self.config
        metadata = config.steering_metadata or {}
        base = config.base_model_name_or_path
        data: dict[str, Any] = {
            "exported_by": f"steering-adapter {__version__}",
            "export_format": export_format,
            "source_adapter": self.location,
            "source_sha256": dict(self.sha256),
            # an embedded model is recorded by its portable id, as the adapter's own config records it
            "base_model": embedded_id(base) if is_embedded(base) else base,
            "revision": config.revision,
            "layers": self.layers,
            "scale": config.scale,
            "layer_scales": dict(config.layer_scales or {}),
            "effective_scales": {str(layer): config.effective_scale(layer) for layer in self.layers},
            "vector_units": metadata.get("vector_units", "raw"),
            "mode": config.mode,
            "positions": config.positions,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
        }
        if metadata.get("method"):
            data["method"] = metadata["method"]
        if base_model is not None and base_model != config.base_model_name_or_path:
            data["base_model_loaded_from"] = base_model
        return data


def read_steering_adapter(path_or_repo_id: str, **hub_kwargs: Any) -> SteeringSource:
    """Read and validate a steering adapter folder or Hub repo for export.

    Args:
        path_or_repo_id: adapter folder or Hub repo id.
        **hub_kwargs: ``revision``, ``token``, ``cache_dir``, ... for Hub repos.

    Returns:
        The :class:`SteeringSource`.

    Raises:
        ValueError: what :func:`~steering_adapter.tuner.validation.validate_adapter_folder` (the loaders' check)
            refuses: not a steering adapter (``peft_type`` is not ``STEERING``), an unknown key, no safetensors file,
            or vectors that do not match the config (missing, extra, wrong shape, NaN/Inf).
    """
    config: SteeringConfig = validate_adapter_folder(path_or_repo_id, **hub_kwargs)
    weights_path = require_safetensors(path_or_repo_id, **hub_kwargs)
    config_path = resolve_adapter_file(path_or_repo_id, CONFIG_NAME, **hub_kwargs)
    state = load_vectors_file(weights_path)
    paths = {match["path"] for key in state if (match := _VECTOR_KEY.match(key))}
    if len(paths) != 1:
        raise ValueError(
            f"{path_or_repo_id}: expected steering vectors under one decoder-blocks path, found {sorted(paths)} "
            f"(keys: {sorted(state)[:6]})"
        )
    blocks_path = paths.pop()
    vectors = validate_vectors(
        state, config.layers, blocks_path, config.hidden_size, path_or_repo_id, config.condition_layer, config.mode
    )
    return SteeringSource(
        location=str(path_or_repo_id),
        config=config,
        vectors={layer: vector.to(torch.float32) for layer, vector in vectors.items()},
        blocks_path=blocks_path,
        sha256={CONFIG_NAME: _sha256(config_path), WEIGHTS_NAME: _sha256(weights_path)},
    )
