"""Pooling decoder-block outputs during a forward pass: the forward hook that reads them, shared by the direction
stage's activation collection and the probe judge's reader.

A hook on block ``i`` reads its output (the residual stream after block ``i``, transformers' ``hidden_states[i + 1]``)
on the block's own device and pools it over a boolean token mask: at the mask's last token (``"last"``) or averaged
over its tokens (``"mean"``, ``"answer"``). Pooled states are float32 (float64 for a float64 model) whatever the
model's dtype. The hook of the deepest block needed raises :class:`StopForward`, so the pass stops there (no final
norm, no logits); the caller catches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from steering_adapter.tuner.token_positions import last_token_index

__all__ = ["StopForward", "pool_hidden_states", "pooling_hook"]


class StopForward(Exception):
    """Raised by the hook of the deepest needed block to skip the rest of the forward pass."""


def pooling_hook(layer: int, deepest: int, state: dict[str, Any], position: str) -> Callable[..., None]:
    """A forward hook that pools block ``layer``'s output into ``state["captured"][layer]``.

    Args:
        layer: the block index.
        deepest: the deepest block needed; its hook raises :class:`StopForward` to end the pass there.
        state: per-batch state: ``"mask"`` (bool ``[b, T]``, the tokens to pool), ``"by_device"`` (a cache, empty
            at the start of a batch) and ``"captured"`` (filled ``{block: [b, d]}``).
        position: ``"last"``, ``"mean"`` or ``"answer"``.

    Returns:
        The hook, for ``register_forward_hook``.
    """

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple | list) else output
        state["captured"][layer] = pool_hidden_states(hidden, state, position)
        if layer == deepest:
            raise StopForward

    return hook


def pool_hidden_states(hidden: torch.Tensor, state: dict[str, Any], position: str) -> torch.Tensor:
    """A block's output pooled at ``position``.

    Args:
        hidden: ``[b, T, d]``, the block's output.
        state: the per-batch state of :func:`pooling_hook` (``"mask"`` and the ``"by_device"`` cache).
        position: ``"last"`` (last pooled token) or ``"mean"`` / ``"answer"`` (mean over the pooled tokens).

    Returns:
        ``[b, d]`` on the block's device, in float32 (float64 for a float64 model).
    """
    mask = state["mask"]
    if hidden.ndim != 3 or hidden.shape[:2] != mask.shape:
        raise RuntimeError(
            f"decoder block output has shape {tuple(hidden.shape)}, expected [batch, seq, hidden] with "
            f"[batch, seq] = {tuple(mask.shape)}"
        )
    device = hidden.device
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    if device not in state["by_device"]:
        local = mask.to(device)
        last = last_token_index(local)
        state["by_device"][device] = (local, last, local.sum(-1, keepdim=True))
    local, last, lengths = state["by_device"][device]
    if position == "last":
        return hidden[torch.arange(hidden.shape[0], device=device), last].to(dtype)
    summed = hidden.masked_fill(~local[..., None], 0).sum(dim=1, dtype=dtype)
    return summed / lengths.to(dtype)
