"""The one check of a steering adapter folder or Hub repo, shared by every reader and writer.

PEFT's loaders (``PeftModel.from_pretrained``, ``PeftModel.load_adapter``, ``AutoPeftModelForCausalLM``) call
:meth:`SteeringConfig.from_pretrained <steering_adapter.tuner.config.SteeringConfig.from_pretrained>`, which checks
``adapter_config.json`` (valid JSON, no unknown key, every field) and ``adapter_model.safetensors`` (safetensors only,
keys, shapes, dtypes, finite values, the gate's condition, ablation directions) before anything is attached.
:func:`validate_adapter_folder` runs exactly that check, plus the ``peft_type`` and, given a model, the model's
dimensions; transformers' ``load_adapter`` (through :mod:`steering_adapter.adapter.integrations`), ``push``,
``export`` and ``inspect`` call it.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from torch import nn

from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.files import CONFIG_NAME, check_adapter_weights, read_json_file, resolve_adapter_file
from steering_adapter.tuner.model import check_model_fits

__all__ = ["describe_adapter", "validate_adapter_folder"]


def validate_adapter_folder(
    path_or_repo_id: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    subfolder: str | None = None,
    **hub_kwargs: Any,
) -> SteeringConfig:
    """Check a steering adapter folder or Hub repo as the loaders do, without attaching anything.

    Args:
        path_or_repo_id: adapter folder or Hub repo id (a folder is read locally, never looked up on the Hub).
        model: the transformers model the adapter is meant for: its hidden size, depth and decoder-block path are
            checked too (``None``: the files only).
        subfolder: folder inside ``path_or_repo_id``.
        **hub_kwargs: ``revision``, ``token``, ``cache_dir``, ... for Hub repos.

    Returns:
        The validated :class:`~steering_adapter.SteeringConfig` (as ``adapter_config.json`` holds it, not fitted to
        ``model``).

    Raises:
        FileNotFoundError: the folder or repo has no ``adapter_config.json``.
        ValueError: ``<file>: <problem>`` on one line: not a ``STEERING`` adapter, invalid JSON, an unknown key (with
            the nearest known one), an invalid field, pickle-only weights, a missing / extra / unexpected tensor, a
            wrong shape or dtype, NaN/Inf, a zero or near-zero vector in ``ablate`` mode or as the condition, or (with
            ``model``) a hidden size, depth or layer the model does not have.
    """
    location = os.fspath(path_or_repo_id)
    config_file = resolve_adapter_file(location, CONFIG_NAME, subfolder=subfolder, **hub_kwargs)
    peft_type = read_json_file(config_file).get("peft_type")
    if peft_type != "STEERING":
        raise ValueError(f"{config_file}: peft_type is {peft_type!r}, not 'STEERING': this is not a steering adapter")
    config = SteeringConfig.from_pretrained(location, subfolder=subfolder, **hub_kwargs)
    if model is None:
        return config
    fitted = copy.deepcopy(config)
    try:
        blocks_path, _ = check_model_fits(fitted, model)
    except ValueError as exc:
        raise ValueError(f"{config_file}: {exc}") from None
    check_adapter_weights(
        fitted.layers,
        fitted.hidden_size,
        fitted.condition_layer,
        location,
        subfolder=subfolder,
        blocks_path=blocks_path,
        mode=fitted.mode,
        **hub_kwargs,
    )
    return config


def describe_adapter(config: SteeringConfig) -> str:
    """One line summing up a validated adapter, e.g. ``layers [1, 2], mode add, scale -3.0, hidden_size 64``."""
    parts = [f"layers {list(config.layers)}", f"mode {config.mode}"]
    if config.mode == "add":
        parts.append(f"scale {config.scale:g}")
    if config.gated:
        parts.append(f"gated on block {config.condition_layer}")
    parts.append(f"hidden_size {config.hidden_size}")
    return ", ".join(parts)
