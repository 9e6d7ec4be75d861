"""Reading the files of a steering adapter folder or Hub repo: safetensors only, validated against the config."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
VECTOR_PARAM = "steering_vector"
CONDITION_PARAM = "steering_condition"

_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")


def _local_dir(path: str, subfolder: str | None) -> str:
    return os.path.join(path, subfolder) if subfolder else path


def resolve_adapter_file(path_or_repo_id: str, filename: str, subfolder: str | None = None, **kwargs: Any) -> str:
    """Local path of ``filename`` in an adapter folder, downloading it from the Hub when needed.

    Raises:
        FileNotFoundError: the folder or repo has no such file.
    """
    local = _local_dir(path_or_repo_id, subfolder)
    if os.path.isdir(local):
        candidate = os.path.join(local, filename)
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"{filename} not found in adapter folder {local}")
        return candidate
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    hub_kwargs = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS and v is not None}
    try:
        return hf_hub_download(path_or_repo_id, filename, subfolder=subfolder, **hub_kwargs)
    except EntryNotFoundError as exc:
        raise FileNotFoundError(f"{filename} not found in Hub repo {path_or_repo_id}") from exc


def require_safetensors(path_or_repo_id: str, subfolder: str | None = None, **kwargs: Any) -> str:
    """Make sure the adapter ships ``adapter_model.safetensors``; return its local path.

    Steering adapters are only ever read from safetensors: a folder or repo that holds only a pickle
    (``adapter_model.bin``) is refused rather than unpickled.

    Raises:
        ValueError: when the safetensors file is missing (the message says whether a pickle file was found).
    """
    try:
        return resolve_adapter_file(path_or_repo_id, WEIGHTS_NAME, subfolder=subfolder, **kwargs)
    except FileNotFoundError as exc:
        local = _local_dir(path_or_repo_id, subfolder)
        has_pickle = os.path.isfile(os.path.join(local, PICKLE_WEIGHTS_NAME))
        detail = f" It holds {PICKLE_WEIGHTS_NAME}, which is never read (pickle)." if has_pickle else ""
        raise ValueError(
            f"steering adapter {path_or_repo_id!r} has no {WEIGHTS_NAME}: steering adapters are read from "
            f"safetensors only.{detail}"
        ) from exc


def read_config_dict(path_or_repo_id: str, **kwargs: Any) -> dict[str, Any]:
    """The raw ``adapter_config.json`` as a dict."""
    with open(resolve_adapter_file(path_or_repo_id, CONFIG_NAME, **kwargs), encoding="utf-8") as handle:
        return json.load(handle)


def vector_key(blocks_path: str, layer: int) -> str:
    """Saved key of the vector of block ``layer``, e.g. ``base_model.model.model.layers.12.steering_vector``."""
    return f"base_model.model.{blocks_path}.{layer}.{VECTOR_PARAM}"


def validate_vectors(
    state_dict: dict[str, torch.Tensor],
    layers: list[int],
    blocks_path: str,
    hidden_size: int | None,
    source: str,
    condition_layer: int | None = None,
) -> dict[int, torch.Tensor]:
    """Check a saved state dict against the config and return ``{layer: vector}``.

    Every configured layer must have exactly one finite vector of shape ``[hidden_size]``; keys for blocks that are
    not in ``layers`` are an error too (they would be silently ignored otherwise). A gated adapter also needs its
    finite, non-zero condition vector ``...<condition_layer>.steering_condition``.

    Raises:
        ValueError: naming the missing / extra key, the bad shape or the non-finite layer.
    """
    vectors: dict[int, torch.Tensor] = {}
    condition_keys = {k for k in state_dict if k.endswith(f".{CONDITION_PARAM}")}
    expected_condition = (
        {f"base_model.model.{blocks_path}.{condition_layer}.{CONDITION_PARAM}"}
        if condition_layer is not None
        else set()
    )
    if condition_keys != expected_condition:
        raise ValueError(
            f"{source}: condition vectors {sorted(condition_keys)} do not match the config "
            f"(condition_layer={condition_layer}; expected {sorted(expected_condition)})"
        )
    for key in expected_condition:
        condition = state_dict[key]
        if condition.shape != (hidden_size,) or not torch.isfinite(condition).all() or not torch.any(condition != 0):
            raise ValueError(f"{source}: condition vector {key!r} must be finite, non-zero, of shape ({hidden_size},)")
    expected = {vector_key(blocks_path, layer): layer for layer in layers}
    vector_keys = {k for k in state_dict if k.endswith(f".{VECTOR_PARAM}")}
    extra = sorted(vector_keys - set(expected))
    if extra:
        raise ValueError(
            f"{source}: steering vectors {extra} do not belong to the configured layers {layers} "
            f"(expected keys like {next(iter(expected), '<none>')!r})"
        )
    for key, layer in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source}: missing steering vector {key!r} for layer {layer}")
        tensor = state_dict[key]
        if tensor.ndim != 1 or (hidden_size is not None and tensor.shape[0] != hidden_size):
            raise ValueError(
                f"{source}: steering vector for layer {layer} has shape {tuple(tensor.shape)}, "
                f"expected ({hidden_size},)"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"{source}: steering vector for layer {layer} has non-float dtype {tensor.dtype}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{source}: steering vector for layer {layer} contains NaN or Inf")
        vectors[layer] = tensor
    return vectors


def load_vectors_file(path: str) -> dict[str, torch.Tensor]:
    """Load an ``adapter_model.safetensors`` file (the only weight format read)."""
    if not path.endswith(".safetensors"):
        raise ValueError(f"refusing to read {path}: steering adapters are read from .safetensors files only")
    return load_file(path)
