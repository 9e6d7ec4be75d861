"""Reading decoder-block outputs during a forward pass and pooling them at one token position.

Forward hooks on the chosen decoder blocks read each block's output (the residual stream after block ``i``, i.e.
transformers' ``hidden_states[i + 1]``) on the block's own device and pool it at the chosen position:

- ``"last"``: the last real token of the formatted prompt (the end of the generation prompt), the default;
- ``"mean"``: the mean over the real prompt tokens (attention mask);
- ``"answer"``: the mean over the tokens of a given answer, teacher-forced after the formatted prompt (the caller
  passes one answer per prompt: the model's own, as sampled when the prompt was scored). The vector is added at
  generated tokens as well as at prompt tokens; this position reads what the refusal looks like at the former.

The hooks and the pooling are :mod:`steering_adapter.measure.sampling.block_pooling`'s (pooled activations are float32,
float64 for a float64 model; the deepest block read ends the pass). :func:`chosen_blocks` checks which blocks are read
and :func:`collection_forward_kwargs` what the passes are given.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

from steering_adapter.measure.sampling.batches import forward_parameters

Position = Literal["last", "mean", "answer"]
POSITIONS: tuple[str, ...] = ("last", "mean", "answer")


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
