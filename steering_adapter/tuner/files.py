"""Reading the files of a steering adapter folder or Hub repo: safetensors only, validated against the config."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file

from steering_adapter.utils.paths import looks_like_path

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
VECTOR_PARAM = "steering_vector"
CONDITION_PARAM = "steering_condition"

# keyword arguments of the Hub download calls that a loader passes on (the rest are the loader's own)
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")
# Every tensor of a steering adapter: base_model.model.<blocks path>.<i>.steering_vector (or .steering_condition).
_KEY = re.compile(rf"^base_model\.model\.(?P<path>.+)\.(?P<layer>\d+)\.(?P<kind>{VECTOR_PARAM}|{CONDITION_PARAM})$")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _local_dir(path: str, subfolder: str | None) -> str:
    return os.path.join(path, subfolder) if subfolder else path


def resolve_adapter_file(path_or_repo_id: str, filename: str, subfolder: str | None = None, **kwargs: Any) -> str:
    """Local path of ``filename`` in an adapter folder, downloading it from the Hub when needed.

    A name that can only be a path (:func:`~steering_adapter.utils.paths.looks_like_path`) or that names an existing
    file is never looked up on the Hub.

    Raises:
        FileNotFoundError: the folder or repo has no such file, or the folder does not exist.
    """
    local = _local_dir(path_or_repo_id, subfolder)
    if os.path.isdir(local):
        candidate = os.path.join(local, filename)
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"{filename} not found in adapter folder {local}")
        return candidate
    if os.path.exists(path_or_repo_id) or looks_like_path(path_or_repo_id):  # never looked up as a Hub repo id
        what = "is a file, not an adapter folder" if os.path.isfile(path_or_repo_id) else "does not exist"
        raise FileNotFoundError(f"no such folder {local!r}: the adapter folder {what}")

    hub_kwargs = {k: v for k, v in kwargs.items() if k in HUB_KWARGS and v is not None}
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


def read_json_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from a file; a syntax error or a non-object names the file, the line and the column.

    Raises:
        ValueError: ``<path> is not valid JSON: <problem> (line L, column C)`` or ``<path> must hold a JSON object``.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_config_dict(path_or_repo_id: str, **kwargs: Any) -> dict[str, Any]:
    """The raw ``adapter_config.json`` as a dict (errors name the file)."""
    return read_json_file(resolve_adapter_file(path_or_repo_id, CONFIG_NAME, **kwargs))


def vector_key(blocks_path: str, layer: int) -> str:
    """Saved key of the vector of block ``layer``, e.g. ``base_model.model.model.layers.12.steering_vector``."""
    return f"base_model.model.{blocks_path}.{layer}.{VECTOR_PARAM}"


def _check_float_vector(tensor: Any, what: str, hidden_size: int | None, source: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{source}: {what} is a {type(tensor).__name__}, not a tensor")
    if tensor.ndim != 1 or (hidden_size is not None and tensor.shape[0] != hidden_size):
        raise ValueError(f"{source}: {what} has shape {tuple(tensor.shape)}, expected ({hidden_size},)")
    if tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{source}: {what} has dtype {tensor.dtype}; expected a float tensor (float32 recommended)")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{source}: {what} contains NaN or Inf")


def min_direction_norm(hidden_size: int) -> float:
    """The smallest L2 norm a vector needs for its direction ``v / ||v||`` to be computed in float32.

    Ablation (``h - (h.u) u`` with ``u = v / ||v||``) and the condition gate (projection on ``c / ||c||``) normalise
    their vector in float32. A squared entry below float32's smallest normal number ``tiny`` underflows, and all of
    them together are at most ``hidden_size * tiny`` of ``||v||^2``; requiring ``||v||^2 > hidden_size * tiny / eps``
    (``eps``: float32's machine epsilon) keeps that loss below float32's own rounding, so ``u`` is a unit vector to
    float32 precision. The floor is about ``2.5e-15`` for ``hidden_size=64`` and ``2e-14`` for ``4096``: no direction
    estimated from activations comes near it, while a zero vector, or one like ``1e-30`` whose squares underflow to a
    float32 norm of 0, falls below it.

    Args:
        hidden_size: the vector's length.

    Returns:
        The floor; a vector whose norm (computed in float64) is at or below it defines no usable direction.
    """
    info = torch.finfo(torch.float32)
    return math.sqrt(max(int(hidden_size), 1) * info.tiny / info.eps)


def direction_problem(vector: torch.Tensor) -> str | None:
    """Why ``vector`` defines no direction (``None`` when it does): zero, or a norm at or below
    :func:`min_direction_norm`."""
    norm = float(torch.linalg.vector_norm(vector.detach().double()))
    floor = min_direction_norm(vector.numel())
    if norm > floor:
        return None
    return f"is zero or too small to define a direction (norm {norm:.3g} <= {floor:.2g})"


def validate_vectors(
    state_dict: dict[str, torch.Tensor],
    layers: list[int],
    blocks_path: str | None,
    hidden_size: int | None,
    source: str,
    condition_layer: int | None = None,
    mode: str = "add",
) -> dict[int, torch.Tensor]:
    """Check a saved state dict against the config and return ``{layer: vector}``.

    Every configured layer must have exactly one finite float vector of shape ``[hidden_size]``; keys for blocks that
    are not in ``layers`` are an error too (they would be silently ignored otherwise), and so is any tensor that is not
    a steering vector or condition. A gated adapter (``condition_layer`` set) needs its finite, non-zero float
    condition vector ``...<condition_layer>.steering_condition``; an ungated one must not have one. In ``ablate``
    mode every vector must define a direction (norm above :func:`min_direction_norm`), and so must a condition.

    Args:
        state_dict: the tensors of ``adapter_model.safetensors`` (keys as saved).
        layers: the config's ``layers``.
        blocks_path: the model's decoder-block path (e.g. ``"model.layers"``); ``None`` when no model is at hand: the
            keys must then agree on one path.
        hidden_size: the config's ``hidden_size`` (``None``: not checked).
        source: what the error messages name (the file).
        condition_layer: the config's ``condition_layer``.
        mode: the config's ``mode``.

    Returns:
        ``{layer: vector}`` as stored.

    Raises:
        ValueError: ``<source>: <problem>``, naming the missing / extra / unexpected key, the bad shape or dtype, the
            non-finite layer, or the zero / near-zero vector of an ``ablate`` adapter or of a condition.
    """
    parsed = {}
    for key in state_dict:
        match = _KEY.match(key)
        if match is None:
            raise ValueError(
                f"{source}: unexpected tensor {key!r}; a steering adapter holds only "
                f"'base_model.model.<blocks path>.<i>.{VECTOR_PARAM}' (and '...{CONDITION_PARAM}' when gated)"
            )
        parsed[key] = match
    paths = sorted({match["path"] for match in parsed.values()})
    if blocks_path is None and len(paths) > 1:
        raise ValueError(f"{source}: tensor keys name several decoder-block paths {paths}; expected one")
    if blocks_path is None:
        blocks_path = paths[0] if paths else "<blocks path>"
    condition_keys = {k for k, match in parsed.items() if match["kind"] == CONDITION_PARAM}
    expected_condition = set()
    if condition_layer is not None:
        expected_condition = {f"base_model.model.{blocks_path}.{condition_layer}.{CONDITION_PARAM}"}
    if condition_keys != expected_condition:
        if not expected_condition:
            problem = f"holds condition tensor(s) {sorted(condition_keys)} but the config has no condition_layer"
        elif not condition_keys:
            problem = f"the config is gated (condition_layer={condition_layer}) but has no condition tensor"
        else:
            problem = f"condition tensor(s) {sorted(condition_keys)} do not match condition_layer={condition_layer}"
        raise ValueError(f"{source}: {problem} (expected {sorted(expected_condition) or 'no condition tensor'})")
    for key in expected_condition:
        _check_float_vector(state_dict[key], f"condition vector {key!r}", hidden_size, source)
        problem = direction_problem(state_dict[key])
        if problem is not None:
            raise ValueError(f"{source}: condition vector {key!r} {problem}: the gate projects on its direction")
    expected = {vector_key(blocks_path, layer): layer for layer in layers}
    vector_keys = {k for k, match in parsed.items() if match["kind"] == VECTOR_PARAM}
    extra = sorted(vector_keys - set(expected))
    if extra:
        raise ValueError(
            f"{source}: steering vectors {extra} do not belong to the configured layers {layers} "
            f"(expected keys like {next(iter(expected), '<none>')!r})"
        )
    vectors: dict[int, torch.Tensor] = {}
    for key, layer in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source}: missing steering vector {key!r} for layer {layer}")
        _check_float_vector(state_dict[key], f"steering vector for layer {layer}", hidden_size, source)
        problem = direction_problem(state_dict[key]) if mode == "ablate" else None
        if problem is not None:
            raise ValueError(
                f"{source}: steering vector {key!r} (block {layer}) {problem}: mode 'ablate' removes the direction "
                "v/||v||"
            )
        vectors[layer] = state_dict[key]
    return vectors


def check_adapter_weights(
    layers: list[int],
    hidden_size: int | None,
    condition_layer: int | None,
    path_or_repo_id: str,
    *,
    subfolder: str | None = None,
    blocks_path: str | None = None,
    mode: str = "add",
    **kwargs: Any,
) -> str:
    """Read an adapter's ``adapter_model.safetensors`` and check it against its config (see :func:`validate_vectors`).

    Returns:
        The local path of the weights file.

    Raises:
        ValueError: no safetensors file (a pickle-only adapter is refused), an unreadable file, or a tensor that does
            not fit the config; the message names the file.
    """
    path = require_safetensors(path_or_repo_id, subfolder=subfolder, **kwargs)
    validate_vectors(load_vectors_file(path), layers, blocks_path, hidden_size, path, condition_layer, mode)
    return path


def load_vectors_file(path: str) -> dict[str, torch.Tensor]:
    """Load an ``adapter_model.safetensors`` file (the only weight format read)."""
    if not path.endswith(".safetensors"):
        raise ValueError(f"refusing to read {path}: steering adapters are read from .safetensors files only")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {' '.join(str(exc).split())}") from None
