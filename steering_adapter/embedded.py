"""Models this package ships or builds without the Hub, addressed by a short name wherever a model id is accepted
(recipes' ``model.name_or_path``, the CLI's ``--model``, an adapter's ``base_model_name_or_path``).

==================== ==========================================================================================
name                 model
==================== ==========================================================================================
``organism``         the 4M-parameter censored toy trained from scratch (:mod:`steering_adapter.organism`)
``smollm2-censored`` SmolLM2-135M-Instruct with the shipped censorship overlay merged (:mod:`steering_adapter.smollm2`)
``smollm2``          SmolLM2-135M-Instruct as converted from its PyPI wheel, without the overlay
==================== ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["EMBEDDED_MODELS", "embedded_config_dir", "is_embedded", "load_embedded"]


def _organism(dtype: torch.dtype) -> tuple[Any, Any]:
    from .organism import load_organism

    return load_organism(dtype=dtype)


def _smollm2_censored(dtype: torch.dtype) -> tuple[Any, Any]:
    from .smollm2 import load_smollm2

    return load_smollm2(censored=True, dtype=dtype)


def _smollm2(dtype: torch.dtype) -> tuple[Any, Any]:
    from .smollm2 import load_smollm2

    return load_smollm2(censored=False, dtype=dtype)


EMBEDDED_MODELS: dict[str, Callable[[torch.dtype], tuple[Any, Any]]] = {
    "organism": _organism,
    "smollm2-censored": _smollm2_censored,
    "smollm2": _smollm2,
}


def is_embedded(name: str | None) -> bool:
    """Whether ``name`` is one of :data:`EMBEDDED_MODELS`."""
    return name in EMBEDDED_MODELS


def load_embedded(name: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of an embedded model, in eval mode, tokenizer padding on the left.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name](dtype)


def embedded_config_dir(name: str) -> str:
    """The local folder holding the ``config.json`` (and tokenizer) of an embedded model.

    Raises:
        ValueError: for an unknown name.
    """
    if name == "organism":
        from .organism import ORGANISM_DIR

        return str(ORGANISM_DIR)
    if name in ("smollm2", "smollm2-censored"):  # the overlay changes weights only, never the config
        from .smollm2 import base_model_dir

        return str(base_model_dir())
    raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
