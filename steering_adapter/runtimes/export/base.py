"""The base model an export is made for: its config and module layout (weights only where they are needed)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from steering_adapter.models.embedded import embedded_config_dir, is_embedded, load_embedded
from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.model import check_model_fits


def resolve_base(name_or_path: str | None) -> str:
    """Where to load a base model's config from: an embedded model's folder (``"organism"``, ``"smollm2-censored"``,
    see :mod:`steering_adapter.models.embedded`), else the name as is.

    Raises:
        ValueError: no base model named (the adapter has no ``base_model_name_or_path`` and none was given).
    """
    if not name_or_path:
        raise ValueError(
            "the adapter names no base model (base_model_name_or_path is empty); pass one explicitly (--base MODEL)"
        )
    if is_embedded(name_or_path):
        return embedded_config_dir(name_or_path)
    return str(name_or_path)


def base_skeleton(name_or_path: str | None, revision: str | None = None) -> nn.Module:
    """The base causal LM built from its config on the meta device: module names and shapes, no weights.

    Args:
        name_or_path: Hub id, folder or ``"organism"``.
        revision: Hub revision.

    Returns:
        The model (parameters on ``meta``); only its config is read from disk or the Hub.
    """

    location = resolve_base(name_or_path)
    config = AutoConfig.from_pretrained(location, revision=revision, local_files_only=Path(location).is_dir())
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def load_base(name_or_path: str | None, revision: str | None = None, dtype: str | torch.dtype = "auto") -> nn.Module:
    """The base causal LM with its weights, in eval mode (``dtype="auto"``: the checkpoint's own dtype)."""

    if is_embedded(name_or_path):  # e.g. the censored SmolLM2: its overlay is merged at load, not in the folder
        model, _ = load_embedded(name_or_path, dtype=torch.float32 if dtype == "auto" else dtype)
        return model.eval()
    location = resolve_base(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        location, revision=revision, dtype=dtype, local_files_only=Path(location).is_dir()
    )
    return model.eval()


def check_base_fits(config: SteeringConfig, model: nn.Module) -> str:
    """Check the adapter's hidden size, depth and layers against ``model``; return the decoder-blocks path.

    Raises:
        ValueError: hidden size or depth mismatch (naming both numbers), or a layer the model does not have.
    """
    blocks_path, _ = check_model_fits(copy.deepcopy(config), model)
    return blocks_path


def model_type(model: nn.Module) -> str:
    """The transformers ``model_type`` of a model's config (``""`` when it has none)."""
    return str(getattr(getattr(model, "config", None), "model_type", "") or "")
