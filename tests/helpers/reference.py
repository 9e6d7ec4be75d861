"""An independent, hand-written implementation of the steering contract with plain forward hooks.

It shares no code with ``steering_adapter``: it reads the contract (docs/adapter-format.md) literally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _edit(hidden: torch.Tensor, vector: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    vector = vector.to(hidden.device, torch.float32)
    if mode == "add":
        return (hidden.float() + factor * vector).to(hidden.dtype)
    unit = vector / vector.norm()
    h = hidden.float()
    return (h - (h @ unit).unsqueeze(-1) * unit).to(hidden.dtype)


@contextlib.contextmanager
def contract_hooks(
    model: nn.Module,
    blocks_path: str,
    adapters: list[dict],
) -> Iterator[None]:
    """Steer ``model`` with forward hooks while the context is open.

    Args:
        model: the base model.
        blocks_path: dotted path of the decoder ModuleList.
        adapters: in activation order, dicts with ``vectors`` ({layer: tensor}), ``scale``, ``layer_scales``
            (dict or None) and ``mode``.
    """
    blocks = model.get_submodule(blocks_path)
    handles = []
    for index, block in enumerate(blocks):
        edits = []
        for adapter in adapters:
            if index in adapter["vectors"]:
                s = (adapter.get("layer_scales") or {}).get(str(index), 1.0)
                edits.append((adapter["vectors"][index], adapter.get("scale", 1.0) * s, adapter.get("mode", "add")))
        if not edits:
            continue

        def hook(module, args, output, edits=edits):
            hidden = output[0] if isinstance(output, tuple) else output
            for vector, factor, mode in edits:
                hidden = _edit(hidden, vector, factor, mode)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handles.append(block.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def block_output(
    model: nn.Module, layer: int, input_ids: torch.Tensor, blocks_path: str = "model.layers"
) -> torch.Tensor:
    """Output hidden states ``[batch, seq, d]`` of decoder block ``layer`` in one no-grad forward of ``input_ids``,
    read with a plain forward hook."""
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(blocks_path)[layer].register_forward_hook(
        lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return captured[0]
