"""llama.cpp control vectors (GGUF): export a steering adapter to one, and import one as a steering adapter.

The layout is the one llama.cpp's loader reads (``common_control_vector_load`` in ``common/common.cpp``) and its
``cvector-generator`` and repeng write: ``general.architecture = "controlvector"``, ``controlvector.model_hint``,
``controlvector.layer_count`` and one F32 1-D tensor ``direction.N`` per steered layer.

Layer numbering, read from llama.cpp's sources (the version vendored by llama-cpp-python 0.3.36) and checked
against that runtime by tests/runtimes/test_export_llamacpp.py: the loader stores ``direction.N`` at row ``N - 1`` and
rejects ``N = 0``; ``llama_adapter_cvec::apply`` gives row ``il - 1`` to layer ``il`` for ``il = 1 .. n_layer - 1``;
the model graphs that support control vectors add that tensor to the output of their 0-based block ``il``
(``build_cvec(cur, il)`` after the block's last residual add). So ``direction.N`` shifts the output of block ``N`` —
the steering adapter's layer ``N``, transformers' ``hidden_states[N + 1]`` — and block 0's output cannot be steered
by a control vector. ``controlvector.layer_count`` is not read by the loader; layers without a tensor get zeros;
tensors naming the same layer (``direction.1`` and ``direction.01``) are summed, and so are several files (each
scaled by its ``--control-vector-scaled F:S`` strength).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from steering_adapter.adapter.cards import write_model_card
from steering_adapter.runtimes.export.base import base_skeleton, check_base_fits, model_type
from steering_adapter.runtimes.export.source import NotExpressibleError, SteeringSource
from steering_adapter.tuner.blocks import find_decoder_blocks, model_dimensions
from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.files import WEIGHTS_NAME, vector_key

ARCHITECTURE = "controlvector"
PROVENANCE_KEY = "steering_adapter.provenance"
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def _require_gguf():
    try:
        import gguf  # lazy: gguf is optional (the gguf extra)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "GGUF control vectors need the gguf package: pip install 'steering-adapter[gguf]' (gguf==0.19.0)"
        ) from exc
    return gguf


def export_gguf(
    source: SteeringSource, out: str | os.PathLike, *, base_model: str | None = None, revision: str | None = None
) -> Path:
    """Write a steering adapter as a llama.cpp control vector.

    Tensor ``direction.{i}`` holds the effective shift ``scale * s_i * v_i`` (float32) of steered block ``i``, so
    ``llama-cli --control-vector OUT`` (strength 1) applies the adapter as saved; ``--control-vector-scaled OUT:S``
    multiplies it by ``S``.

    Args:
        source: the steering adapter (:func:`~steering_adapter.runtimes.export.read_steering_adapter`).
        out: the ``.gguf`` file to write.
        base_model: where to read the base model's config (default: the adapter's ``base_model_name_or_path``);
            used for ``controlvector.model_hint`` and to check hidden size and depth.
        revision: Hub revision of ``base_model``.

    Returns:
        The path written.

    Raises:
        NotExpressibleError: ablate mode, condition gating, or a vector on block 0 (llama.cpp has no tensor for
            block 0's output).
        ValueError: the base model does not fit the adapter.
    """
    gguf = _require_gguf()
    source.require_additive("a llama.cpp control vector")
    if 0 in source.layers:
        raise NotExpressibleError(
            f"{source.location} steers block 0, which a llama.cpp control vector cannot: llama.cpp adds direction.N "
            "to the output of block N and rejects direction.0 (block 0's output is never steered)"
        )
    base = base_model or source.config.base_model_name_or_path
    skeleton = base_skeleton(base, revision or source.config.revision)
    check_base_fits(source.config, skeleton)
    provenance = source.provenance("gguf", base_model)
    provenance["direction_numbering"] = "direction.N is added to the output of 0-based block N"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), ARCHITECTURE)
    writer.add_string(f"{ARCHITECTURE}.model_hint", model_type(skeleton))
    writer.add_int32(f"{ARCHITECTURE}.layer_count", len(source.layers))
    writer.add_string(PROVENANCE_KEY, json.dumps(provenance, sort_keys=True))
    for layer, delta in source.deltas().items():
        writer.add_tensor(f"direction.{layer}", delta.numpy().astype(np.float32, copy=False))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def read_control_vector(path: str | os.PathLike) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read and validate a llama.cpp / repeng control vector.

    Args:
        path: the ``.gguf`` file.

    Returns:
        ``({N: direction.N as float32 [n_embd]}, {metadata key: value})``; tensors naming the same layer are added
        up, as llama.cpp's loader does.

    Raises:
        ValueError: not a GGUF file, not a control vector (``general.architecture``), no direction tensors, a tensor
            that is not ``direction.N`` with ``N >= 1`` (``direction.0`` is rejected by llama.cpp too), not F32, not
            1-D, of a size unlike the others, or holding NaN/Inf.
    """
    gguf = _require_gguf()
    try:
        reader = gguf.GGUFReader(os.fspath(path))
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable GGUF file: {exc}") from exc
    metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    architecture = metadata.get("general.architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(
            f"{path} is not a control vector: general.architecture is {architecture!r}, expected {ARCHITECTURE!r}"
        )
    directions: dict[int, np.ndarray] = {}
    n_embd = None
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None:
            raise ValueError(f"{path}: tensor {tensor.name!r} is not a control-vector direction (direction.N)")
        layer = int(match.group(1))
        if layer == 0:
            raise ValueError(
                f"{path}: direction.0 is invalid: llama.cpp numbers directions from 1 (direction.N shifts the "
                "output of block N) and rejects direction.0"
            )
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{path}: {tensor.name} is {tensor.tensor_type.name}, control vectors must be F32")
        if len(tensor.shape) != 1:
            raise ValueError(f"{path}: {tensor.name} has shape {tuple(int(s) for s in tensor.shape)}, expected 1-D")
        data = np.array(tensor.data, dtype=np.float32).reshape(-1)
        if n_embd is None:
            n_embd = data.shape[0]
        elif data.shape[0] != n_embd:
            raise ValueError(f"{path}: {tensor.name} has {data.shape[0]} values, the other directions {n_embd}")
        if not np.isfinite(data).all():
            raise ValueError(f"{path}: {tensor.name} contains NaN or Inf")
        # llama.cpp adds up tensors that name the same layer (direction.1 and direction.01)
        directions[layer] = directions[layer] + data if layer in directions else data
    if not directions:
        raise ValueError(f"{path}: the control vector holds no direction tensors")
    return directions, metadata


def import_gguf(
    path: str | os.PathLike,
    base_model: str,
    out: str | os.PathLike,
    *,
    revision: str | None = None,
    scale: float = 1.0,
) -> Path:
    """Turn a llama.cpp / repeng control vector into a steering adapter folder.

    ``direction.N`` becomes the vector of layer ``N`` (the output of block ``N``, where llama.cpp adds it), with
    ``scale`` as α (1.0 keeps the file's strength), so exporting the adapter again gives byte-identical tensors.

    Args:
        path: the ``.gguf`` control vector.
        base_model: the model it belongs to (Hub id, folder or ``"organism"``); only its config is read.
        out: the adapter folder to write (``adapter_config.json``, ``adapter_model.safetensors``, ``README.md``).
        revision: Hub revision of ``base_model``.
        scale: the adapter's α.

    Returns:
        The adapter folder.

    Raises:
        ValueError: an invalid control vector (see :func:`read_control_vector`), a size unlike the base model's
            hidden size, a direction beyond the base model's depth, or a non-finite scale.
    """

    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    directions, metadata = read_control_vector(path)
    skeleton = base_skeleton(base_model, revision)
    hidden_size, depth = model_dimensions(skeleton)
    n_embd = next(iter(directions.values())).shape[0]
    if n_embd != hidden_size:
        raise ValueError(
            f"{path}: the directions have n_embd={n_embd} but the base model {base_model} has hidden_size="
            f"{hidden_size}: the control vector belongs to another model"
        )
    beyond = sorted(layer for layer in directions if layer >= depth)
    if beyond:
        raise ValueError(
            f"{path}: direction.{beyond[0]} is beyond the depth of {base_model} ({depth} blocks, so direction.1 .. "
            f"direction.{depth - 1})"
        )
    blocks_path = find_decoder_blocks(skeleton).path
    with open(path, "rb") as handle:
        file_sha256 = hashlib.sha256(handle.read()).hexdigest()
    imported: dict[str, Any] = {"file": Path(path).name, "sha256": file_sha256}
    for key in (f"{ARCHITECTURE}.model_hint", f"{ARCHITECTURE}.layer_count"):
        if key in metadata:
            imported[key.split(".", 1)[1]] = metadata[key]
    if PROVENANCE_KEY in metadata:
        imported["export_provenance"] = json.loads(metadata[PROVENANCE_KEY])
    config = SteeringConfig(
        layers=sorted(directions),
        scale=float(scale),
        hidden_size=int(hidden_size),
        num_hidden_layers=int(depth),
        base_model_name_or_path=base_model,
        revision=revision,
        steering_metadata={"method": "imported control vector", "vector_units": "raw", "imported_from": imported},
    )
    check_base_fits(config, skeleton)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))

    tensors = {vector_key(blocks_path, layer): torch.from_numpy(data.copy()) for layer, data in directions.items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    write_model_card(str(out))
    return out
