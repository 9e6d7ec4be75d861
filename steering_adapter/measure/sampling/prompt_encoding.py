"""The one prompt encoder: how a user prompt becomes the token ids a model sees just before it answers.

Sampling (transformers and vLLM), activation collection, the condition gate, KL on neutral prompts, the local LLM
judge and answer log-probabilities all go through these functions, so a prompt is the same token sequence in every
stage (same chat template, same system turn, same special tokens):

- **Formatting** (:func:`format_prompts`, :func:`format_chat`): each prompt is one user turn, optionally after a
  system turn, rendered with the tokenizer's chat template and ``add_generation_prompt=True``. A tokenizer without
  a template gets the plain text: the system prompt (if any), a blank line, the prompt.
- **Tokenising** (:func:`encode_texts`): a rendered chat template already holds its special tokens (BOS, ...), so
  they are not added again; plain text gets the tokenizer's own special tokens.
- **Padding** (:func:`pad_batch`): by hand, on the side asked for (left for generation and last-token reads), so
  the tokenizer's ``padding_side`` never matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "encode_prompts",
    "encode_texts",
    "format_chat",
    "format_prompts",
    "input_device",
    "pad_batch",
    "padding_id",
    "stop_token_ids",
    "user_conversation",
]


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends an answer: the model's generation-config eos ids, then the tokenizer's eos id.

    Args:
        model: anything with an optional ``generation_config`` (a transformers model, or a stand-in holding one).
        tokenizer: a transformers tokenizer.

    Returns:
        The ids in that order, without duplicates (empty when neither names one).
    """
    ids: list[int] = []
    generation_config = getattr(model, "generation_config", None)
    candidates = [getattr(generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)]
    for value in candidates:
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return ids


def padding_id(tokenizer: Any, eos_ids: Sequence[int] = ()) -> int:
    """The id padded positions hold (always masked out): the tokenizer's pad id, else the first of ``eos_ids``, else
    the tokenizer's eos id, else 0."""
    for value in (getattr(tokenizer, "pad_token_id", None), *eos_ids[:1], getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def user_conversation(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The one-turn conversation ``[system?, user]`` every stage formats."""
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def format_chat(
    tokenizer: Any,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    *,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Render conversations as the model sees them just before it answers.

    Args:
        tokenizer: a transformers tokenizer.
        conversations: lists of ``{"role": ..., "content": ...}`` messages.
        chat_template_kwargs: extra template variables (e.g. ``{"enable_thinking": False}``).

    Returns:
        One string per conversation: ``apply_chat_template(..., add_generation_prompt=True, tokenize=False)``, or,
        without a chat template, the message contents joined by blank lines.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return ["\n\n".join(message["content"] for message in messages) for messages in conversations]
    extra = dict(chat_template_kwargs or {})
    return [
        tokenizer.apply_chat_template(
            [dict(message) for message in messages], add_generation_prompt=True, tokenize=False, **extra
        )
        for messages in conversations
    ]


def format_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Format user prompts as the model sees them just before it answers.

    Args:
        tokenizer: a transformers tokenizer.
        prompts: user messages.
        system_prompt: optional system message put before each prompt.
        chat_template_kwargs: extra variables for the template (e.g. ``{"enable_thinking": False}``).

    Returns:
        One string per prompt (see :func:`format_chat`).
    """
    conversations = [user_conversation(prompt, system_prompt) for prompt in prompts]
    return format_chat(tokenizer, conversations, chat_template_kwargs=chat_template_kwargs)


def encode_texts(tokenizer: Any, texts: Sequence[str], *, add_special_tokens: bool | None = None) -> list[list[int]]:
    """Token ids of rendered texts, unpadded.

    Args:
        tokenizer: a transformers tokenizer.
        texts: strings from :func:`format_prompts` / :func:`format_chat` (or plain texts).
        add_special_tokens: ``None`` (default) adds the tokenizer's special tokens only when it has no chat
            template (a rendered template already holds them); ``True`` / ``False`` force it.

    Returns:
        One list of ids per text.

    Raises:
        ValueError: a text tokenises to no tokens (naming which).
    """
    if add_special_tokens is None:
        add_special_tokens = getattr(tokenizer, "chat_template", None) is None
    encoded = [list(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(
            f"prompts {empty[:5]} (positions in this batch) tokenise to no tokens; give non-empty prompts or a "
            "tokenizer that adds BOS"
        )
    return encoded


def pad_batch(
    encoded: Sequence[Sequence[int]],
    pad_id: int,
    *,
    side: Literal["left", "right"] = "left",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists into one batch.

    Args:
        encoded: ``B`` lists of token ids.
        pad_id: id written into the padding (masked out).
        side: ``"left"`` (the last prompt token is the last column) or ``"right"``.
        device: where the tensors go.

    Returns:
        ``input_ids`` and ``attention_mask``, both long ``[B, max_len]``.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max((len(ids) for ids in encoded), default=0)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        span = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
        input_ids[row, span] = torch.as_tensor(list(ids), dtype=torch.long)
        attention_mask[row, span] = 1
    if device is not None:
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    return input_ids, attention_mask


def encode_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    pad_id: int,
    *,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Format, tokenise and left-pad user prompts: what a model is fed to answer them.

    Args:
        tokenizer: a transformers tokenizer.
        prompts: ``B`` user messages.
        pad_id: padding id.
        system_prompt: optional system turn.
        chat_template_kwargs: extra template variables.
        device: where the tensors go.

    Returns:
        ``input_ids`` and ``attention_mask``, long ``[B, max_len]``, left-padded.
    """
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs)
    return pad_batch(encode_texts(tokenizer, texts), pad_id, side="left", device=device)


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the embedding's device (the first device of a ``device_map`` model; CPU when the embedding
    is offloaded to ``meta``, accelerate's hooks then move the inputs to its execution device)."""
    try:
        device = model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device
