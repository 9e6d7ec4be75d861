"""Where the text decoder blocks of each architecture live.

The steering contract addresses "decoder block i" of the text model. This module finds that ``nn.ModuleList`` for
the usual causal-LM layouts (Llama, Mistral, Qwen2/3, Qwen3-MoE, Qwen3-Next, Gemma2/3, Phi3, OLMo2: ``model.layers``;
GPT-2: ``transformer.h``; GPT-NeoX: ``gpt_neox.layers``; multimodal wrappers: ``model.language_model.layers``), and
never picks a vision or audio tower. Other models can name the path explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Known paths of the text decoder blocks, relative to the loaded transformers model, most specific first.
KNOWN_BLOCK_PATHS: tuple[str, ...] = (
    "model.language_model.layers",  # Gemma3ForConditionalGeneration, Qwen-VL style wrappers (transformers 5)
    "language_model.model.layers",  # older multimodal wrappers
    "model.layers",  # Llama, Mistral, Qwen2, Qwen3, Qwen3-MoE, Qwen3-Next, Gemma2/3, Phi3, OLMo2, ...
    "transformer.h",  # GPT-2, GPT-J, Falcon (old), BLOOM
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "layers",  # a bare decoder (e.g. LlamaModel)
    "h",  # a bare GPT2Model
)

# Sub-trees that never hold the text decoder.
_NON_TEXT_MARKERS = ("vision", "visual", "audio", "image", "vit", "encoder", "speech", "mm_projector")


@dataclass(frozen=True)
class DecoderBlocks:
    """The text decoder blocks of a model.

    Attributes:
        path: dotted path of the ``nn.ModuleList`` relative to the model it was found in, e.g. ``"model.layers"``.
        blocks: the ``nn.ModuleList`` itself.
    """

    path: str
    blocks: nn.ModuleList

    def __len__(self) -> int:
        return len(self.blocks)

    def name_of(self, index: int) -> str:
        """Dotted module name of block ``index`` (e.g. ``"model.layers.3"``)."""
        return f"{self.path}.{index}"


def _get_submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def text_config(model: nn.Module):
    """The text part of a transformers config (``config.text_config`` for multimodal models), or ``None``."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        return get_text_config()
    return getattr(config, "text_config", config)


def model_dimensions(model: nn.Module) -> tuple[int | None, int | None]:
    """``(hidden_size, num_hidden_layers)`` of the text model, read from its config (``None`` when unknown)."""
    config = text_config(model)
    if config is None:
        return None, None
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    return hidden, layers


def block_device(block: nn.Module) -> torch.device:
    """The device a decoder block computes on, i.e. where its output and anything kept per block belong.

    A block dispatched by accelerate (``device_map``) with an ``execution_device`` computes there even when its
    weights are offloaded (on ``meta``); otherwise it is the device of the block's first parameter (or buffer). A block
    without any, or with weights on ``meta`` and no execution device, counts as CPU.
    """
    execution = getattr(getattr(block, "_hf_hook", None), "execution_device", None)
    if execution is not None:
        return torch.device("cuda", execution) if isinstance(execution, int) else torch.device(execution)
    tensor = next(block.parameters(), None)
    if tensor is None:
        tensor = next(block.buffers(), None)
    if tensor is None or tensor.device.type == "meta":
        return torch.device("cpu")
    return tensor.device


def _candidate_lists(model: nn.Module) -> list[tuple[str, int]]:
    return [(name, len(module)) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]


def find_decoder_blocks(model: nn.Module, path: str | None = None) -> DecoderBlocks:
    """Locate the text decoder blocks of ``model``.

    Args:
        model: a transformers model (or any ``nn.Module``), not wrapped in a ``PeftModel``.
        path: explicit dotted path of the ``nn.ModuleList`` of blocks, for architectures not recognised
            automatically.

    Returns:
        The blocks and their path.

    Raises:
        ValueError: when the path does not exist or is not a ``ModuleList``, or when no known layout matches; the
            message lists every ``ModuleList`` the model has, with its length.
    """
    if path is not None:
        module = _get_submodule(model, path)
        if not isinstance(module, nn.ModuleList):
            raise ValueError(
                f"blocks path {path!r} is not an nn.ModuleList in {type(model).__name__} "
                f"(found {type(module).__name__ if module is not None else 'nothing'}). "
                f"ModuleLists in this model: {_describe(model)}"
            )
        return DecoderBlocks(path, module)

    _, expected_layers = model_dimensions(model)
    for candidate in KNOWN_BLOCK_PATHS:
        module = _get_submodule(model, candidate)
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if expected_layers is not None and len(module) != expected_layers:
                continue
            return DecoderBlocks(candidate, module)

    # Fallback: a single ModuleList outside any vision/audio tower whose length is the text depth.
    if expected_layers is not None:
        matches = [
            name
            for name, length in _candidate_lists(model)
            if length == expected_layers and not any(m in name.lower() for m in _NON_TEXT_MARKERS)
        ]
        if len(matches) == 1:
            return DecoderBlocks(matches[0], model.get_submodule(matches[0]))
    raise ValueError(
        f"could not find the text decoder blocks of {type(model).__name__} "
        f"(config num_hidden_layers={expected_layers}). ModuleLists in this model: {_describe(model)}. "
        "Pass the path explicitly, e.g. SteeringConfig(blocks_path='model.layers')."
    )


def _describe(model: nn.Module) -> str:
    found = _candidate_lists(model)
    if not found:
        return "none"
    return ", ".join(f"{name!r} (len {length})" for name, length in found[:20]) + (" ..." if len(found) > 20 else "")
