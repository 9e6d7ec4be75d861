"""Steering adapters as files people share: building them from vectors, composing several, the transformers / PEFT
load checks, model cards and the Hub."""

from steering_adapter.adapter.builder import adapter_from_vectors, save_adapter
from steering_adapter.adapter.cards import read_front_matter, render_model_card, write_model_card
from steering_adapter.adapter.composition import (
    Composition,
    CompositionPart,
    interference,
    load_composition,
    orthogonalize_adapter,
    read_composition,
    save_composition,
)
from steering_adapter.adapter.hub import HubUnreachableError, push_adapter
from steering_adapter.adapter.integrations import check_steering_adapter, install

__all__ = [
    "Composition",
    "CompositionPart",
    "HubUnreachableError",
    "adapter_from_vectors",
    "check_steering_adapter",
    "install",
    "interference",
    "load_composition",
    "orthogonalize_adapter",
    "push_adapter",
    "read_composition",
    "read_front_matter",
    "render_model_card",
    "save_adapter",
    "save_composition",
    "write_model_card",
]
