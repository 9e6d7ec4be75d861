"""Build and save steering adapters from plain ``{layer: vector}`` dicts, without knowing PEFT internals."""

from __future__ import annotations

import os
from typing import Any

import torch
from peft import PeftModel, get_peft_model
from torch import nn

from steering_adapter.adapter.cards import write_model_card
from steering_adapter.tuner.config import SteeringConfig


def adapter_from_vectors(
    model: nn.Module,
    vectors: dict[int, torch.Tensor],
    config: SteeringConfig | None = None,
    *,
    adapter_name: str = "default",
    condition: torch.Tensor | None = None,
    **config_fields: Any,
) -> PeftModel:
    """Attach a steering adapter made from ``{layer: vector}`` to ``model``.

    Args:
        model: a transformers causal LM, or a ``PeftModel`` that already holds steering adapters (the new one is
            added beside them and not activated; use ``set_adapter``).
        vectors: one ``[hidden_size]`` tensor per steered block, keyed by 0-based block index.
        config: a :class:`SteeringConfig`; ``layers`` is taken from ``vectors`` when left empty. Alternatively pass
            its fields as keyword arguments (``scale=-4.0``, ``mode="ablate"``, ``steering_metadata={...}``, ...).
        adapter_name: name of the adapter.
        condition: the condition vector ``[hidden_size]`` of a condition-gated adapter (``condition_layer`` and
            ``condition_threshold`` set in the config); required exactly when the config is gated.

    Returns:
        The ``PeftModel`` with the adapter attached and active (for a fresh model).

    Raises:
        ValueError: empty ``vectors``, layers that disagree with ``config.layers``, wrong hidden size, NaN/Inf.
    """
    if not vectors:
        raise ValueError("vectors is empty: give at least one {layer: vector}")
    if config is not None and config_fields:
        raise ValueError("pass either a SteeringConfig or config fields, not both")
    if config is None:
        config_fields.setdefault("layers", sorted(int(layer) for layer in vectors))
        config = SteeringConfig(**config_fields)
    elif not config.layers:
        config.layers = sorted(int(layer) for layer in vectors)
        config.validate()
    if config.gated != (condition is not None):
        raise ValueError(
            "a condition vector is required exactly when the config has a condition_layer "
            f"(condition_layer={config.condition_layer}, condition given: {condition is not None})"
        )
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
        peft_model = model
    else:
        peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    peft_model.base_model.set_vectors(vectors, adapter_name=adapter_name)
    if condition is not None:
        peft_model.base_model.set_condition(condition, adapter_name=adapter_name)
    peft_model.eval()
    return peft_model


def save_adapter(
    model: PeftModel,
    save_directory: str | os.PathLike,
    *,
    adapter_name: str = "default",
    evaluation: dict[str, Any] | None = None,
    card: bool = True,
) -> str:
    """Save one steering adapter as ``adapter_config.json`` + ``adapter_model.safetensors`` + model card.

    Args:
        model: the ``PeftModel`` holding the adapter.
        save_directory: target folder. For ``adapter_name != "default"`` PEFT's sub-folder convention is *not*
            used: the adapter's files go straight into ``save_directory``.
        adapter_name: which adapter to save.
        evaluation: optional evaluation report rendered into the model card.
        card: write ``README.md`` from the template ``steering_adapter/adapter/templates/model_card.md``.

    Returns:
        The folder path.
    """

    save_directory = os.fspath(save_directory)
    if adapter_name not in model.peft_config:
        raise ValueError(f"no adapter named {adapter_name!r}; attached: {sorted(model.peft_config)}")
    # Steering adapters never hold embeddings: save_embedding_layers=False also spares PEFT's Hub lookup of the base
    # model's config.json (no network access when saving).
    model.save_pretrained(
        save_directory, selected_adapters=[adapter_name], safe_serialization=True, save_embedding_layers=False
    )
    if adapter_name != "default":  # PEFT writes non-default adapters to <dir>/<name>/: flatten
        nested = os.path.join(save_directory, adapter_name)
        for filename in os.listdir(nested):
            os.replace(os.path.join(nested, filename), os.path.join(save_directory, filename))
        os.rmdir(nested)
    if card:
        write_model_card(save_directory, evaluation=evaluation)
    return save_directory
