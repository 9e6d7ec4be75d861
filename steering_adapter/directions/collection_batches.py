"""Prompts into padded token batches for the collector: chat-template formatting, answers, length sorting, padding.

Prompts are formatted with the tokenizer's chat template (user turn, optional system prompt, generation prompt
appended; plain text when the tokenizer has no template) and grouped by length into padded batches. With
``position="answer"`` each prompt's answer (token ids, or text tokenised without special tokens) is appended after
the formatted prompt, and only its tokens are pooled.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steering_adapter.measure.sampling.prompt_encoding import encode_texts, format_prompts, pad_batch, padding_id

# An answer: its token ids (exactly what the model generated) or its text (tokenised without special tokens).
Answer = Sequence[int] | str

# Prompts tokenised and length-sorted together: bounds memory for huge prompt lists while keeping padding low.
_SORT_WINDOW_BATCHES = 64


@dataclass
class CollectionBatch:
    """One padded batch of prompts.

    Attributes:
        indices: positions of the batch's prompts in the caller's list.
        input_ids: ``[b, T]`` token ids.
        attention_mask: ``[b, T]``, 1 on real tokens.
        pool_mask: ``[b, T]``, 1 on the tokens pooled (``"answer"``: the answer's; otherwise the real tokens).
    """

    indices: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pool_mask: torch.Tensor


def answer_token_ids(
    tokenizer: Any, position: str, prompts: list[str], answers: Sequence[Answer] | None
) -> list[list[int]] | None:
    """The answers' token ids (``position="answer"``), checked: one non-empty answer per prompt.

    Args:
        tokenizer: the model's tokenizer (text answers are tokenised without special tokens).
        position: the collector's pooling position; answers are read at ``"answer"`` only.
        prompts: the prompts.
        answers: one answer per prompt, token ids or text; ``None`` for another position.

    Returns:
        One list of token ids per prompt, or ``None`` for a position other than ``"answer"``.

    Raises:
        ValueError: answers at another position, none at ``"answer"``, not one per prompt, or an empty one.
    """
    if position != "answer":
        if answers is not None:
            raise ValueError(f"answers are only read at position 'answer' (this collector pools {position!r})")
        return None
    if answers is None:
        raise ValueError("position 'answer' pools over answer tokens: pass answers (one per prompt)")
    if isinstance(answers, str) or len(answers) != len(prompts):
        count = "a single string" if isinstance(answers, str) else f"{len(answers)} answers"
        raise ValueError(f"position 'answer' needs one answer per prompt: got {count} for {len(prompts)} prompts")
    texts = [i for i, answer in enumerate(answers) if isinstance(answer, str) and answer]
    encoded = encode_texts(tokenizer, [answers[i] for i in texts], add_special_tokens=False) if texts else []
    ids: list[list[int]] = [[] for _ in answers]
    for i, tokens in zip(texts, encoded, strict=True):
        ids[i] = list(tokens)
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            if not all(isinstance(token, numbers.Integral) for token in answer):
                raise ValueError(f"answer {i} must be a string or a sequence of token ids")
            ids[i] = [int(token) for token in answer]
    empty = [i for i, tokens in enumerate(ids) if not tokens]
    if empty:
        raise ValueError(
            f"answers {empty[:5]} have no tokens: position 'answer' pools over at least one answer token "
            "(leave empty answers out, with their prompts)"
        )
    return ids


def collection_batches(
    tokenizer: Any,
    prompts: list[str],
    order: list[int],
    answer_ids: list[list[int]] | None,
    *,
    batch_size: int,
    system_prompt: str | None,
    chat_template_kwargs: Mapping[str, Any],
    padding_side: str,
) -> Iterator[CollectionBatch]:
    """Format, tokenise, length-sort and pad the prompts ``order`` picks, window by window.

    Windows of ``batch_size · 64`` prompts are tokenised together and sorted longest first inside the window, so
    memory stays bounded for huge prompt lists while padding stays low, and an out-of-memory error shows up at the
    first batch.

    Args:
        tokenizer: the model's tokenizer (its chat template is used when present).
        prompts: the user messages.
        order: the positions in ``prompts`` to run.
        answer_ids: one answer per prompt (token ids), appended after the formatted prompt and pooled over; or
            ``None``.
        batch_size: prompts per batch.
        system_prompt: optional system message.
        chat_template_kwargs: extra chat-template variables.
        padding_side: ``"left"`` or ``"right"``.

    Yields:
        :class:`CollectionBatch` objects.
    """
    window = batch_size * _SORT_WINDOW_BATCHES
    pad_id = padding_id(tokenizer)
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        texts = format_prompts(
            tokenizer,
            [prompts[i] for i in chunk],
            system_prompt=system_prompt,
            chat_template_kwargs=chat_template_kwargs,
        )
        encoded = encode_texts(tokenizer, texts)
        # pooled tokens: the answer's, after the prompt (otherwise every real token: the attention mask)
        pooled = None
        if answer_ids is not None:
            pooled = [[0] * len(ids) + [1] * len(answer_ids[i]) for ids, i in zip(encoded, chunk, strict=True)]
            encoded = [ids + answer_ids[i] for ids, i in zip(encoded, chunk, strict=True)]
        # Longest first: the largest batch runs first, so an out-of-memory error shows up at once.
        ranked = sorted(range(len(chunk)), key=lambda j: -len(encoded[j]))
        for b in range(0, len(ranked), batch_size):
            members = ranked[b : b + batch_size]
            input_ids, attention_mask = pad_batch([encoded[j] for j in members], pad_id, side=padding_side)
            pool_mask = attention_mask
            if pooled is not None:
                pool_mask, _ = pad_batch([pooled[j] for j in members], 0, side=padding_side)
            yield CollectionBatch([chunk[j] for j in members], input_ids, attention_mask, pool_mask)
