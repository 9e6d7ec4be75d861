"""Reading decoder-block outputs during a forward pass and pooling them at one token position.

Forward hooks on the chosen decoder blocks read each block's output (the residual stream after block ``i``, i.e.
transformers' ``hidden_states[i + 1]``) on the block's own device and pool it at the chosen position:

- ``"last"``: the last real token of the formatted prompt (the end of the generation prompt), the default;
- ``"mean"``: the mean over the real prompt tokens (attention mask);
- ``"answer"``: the mean over the tokens of a given answer, teacher-forced after the formatted prompt (the caller
  passes one answer per prompt: the model's own, as sampled when the prompt was scored). The vector is added at
  generated tokens as well as at prompt tokens; this position reads what the refusal looks like at the former.

Pooled activations are float32 (float64 for a float64 model) whatever the model's dtype. The hook of the deepest
block needed raises :class:`StopForward`, so the pass stops there (no final norm, no logits). :func:`chosen_blocks`
checks which blocks are read.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from steering_adapter.measure.sampling.batches import forward_parameters
from steering_adapter.tuner.token_positions import last_token_index

Position = Literal["last", "mean", "answer"]
POSITIONS: tuple[str, ...] = ("last", "mean", "answer")


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


def collection_forward_kwargs(model: nn.Module) -> dict[str, Any]:
    """The keyword arguments of the collection's forward passes that the model's ``forward`` accepts
    (:func:`~steering_adapter.measure.sampling.batches.forward_parameters`).

    ``use_cache=False``, and ``position_ids`` (``None`` here: filled per batch from the attention mask).
    """
    parameters = forward_parameters(model)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs: dict[str, Any] = {}
    if "use_cache" in parameters or accepts_any:
        kwargs["use_cache"] = False
    if "position_ids" in parameters:
        kwargs["position_ids"] = None  # filled per batch from the attention mask
    return kwargs


def chosen_blocks(layers: Sequence[int] | None, n_blocks: int) -> list[int]:
    """The blocks to read, checked: sorted, unique, negative indices counted from the end.

    Args:
        layers: block indices, or ``None`` for all blocks.
        n_blocks: the model's number of decoder blocks.

    Returns:
        Sorted unique block indices in ``0..n_blocks-1``.

    Raises:
        ValueError: for a non-integer or out-of-range index, or an empty list.
    """
    if layers is None:
        chosen = list(range(n_blocks))
    else:
        chosen = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
                raise ValueError(f"layer indices must be integers, got {layer!r}")
            layer = int(layer)
            if not -n_blocks <= layer < n_blocks:
                raise ValueError(
                    f"layer index {layer} is out of range: the model has {n_blocks} decoder blocks "
                    f"(valid: 0..{n_blocks - 1}, or negative from the end)"
                )
            chosen.append(layer % n_blocks)
        if not chosen:
            raise ValueError("layers is empty; pass None for all blocks")
    return sorted(set(chosen))
