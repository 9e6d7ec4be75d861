"""Left-padded prompt batches and the arguments of one cache-free forward pass over them.

One batching for ``generate``, teacher-forced log-probabilities and the gate's decisions, so that every pass sees the
prompts exactly as sampling does.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from steering_adapter.measure.sampling.prompt_encoding import encode_texts, pad_batch
from steering_adapter.tuner.token_positions import position_ids_from_mask

__all__ = ["accepted_forward_arguments", "forward_inputs", "forward_parameters", "prompt_batches"]


def prompt_batches(
    tokenizer: Any, texts: Sequence[str], batch_size: int, pad_id: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """The formatted prompts as ``generate`` gets them: ``batch_size`` per batch, in order, encoded and left-padded.

    Yields:
        ``(start, input_ids, attention_mask)``: the batch's first index in ``texts`` and its ``[b, width]`` tensors
        on ``device``.
    """
    for start in range(0, len(texts), batch_size):
        input_ids, attention_mask = pad_batch(
            encode_texts(tokenizer, texts[start : start + batch_size]), pad_id, device=device
        )
        yield start, input_ids, attention_mask


def forward_parameters(model: nn.Module) -> Mapping[str, inspect.Parameter]:
    """The parameters of the underlying transformers model's ``forward`` (a ``PeftModel`` unwrapped).

    The one probe of what a forward pass may be given, for sampling, log-probabilities, the gate and activation
    collection alike.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(base.forward).parameters


def accepted_forward_arguments(model: nn.Module) -> tuple[bool, bool]:
    """Whether the underlying transformers model accepts ``position_ids`` and ``logits_to_keep``."""
    parameters = forward_parameters(model)
    return "position_ids" in parameters, "logits_to_keep" in parameters


def forward_inputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int
) -> dict[str, Any]:
    """Arguments of one cache-free forward pass over a left-padded batch: positions counted from each row's first
    real token, and logits for the last ``logits_to_keep`` positions only (where the model takes them)."""
    takes_positions, takes_logits_to_keep = accepted_forward_arguments(model)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if takes_positions:
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    if takes_logits_to_keep:
        kwargs["logits_to_keep"] = logits_to_keep
    return kwargs
