"""Sampled answers as records: :class:`Answer` and :class:`PromptSamples`, the ``</think>`` split of thinking models,
and the checks and seeds every sampling backend shares (transformers and vLLM build the same records)."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "THINK_END",
    "THINK_START",
    "Answer",
    "PromptSamples",
    "answer_from_tokens",
    "answer_lengths",
    "check_sampling_arguments",
    "derive_seed",
    "split_answer_tokens",
    "split_reasoning",
]

THINK_END = "</think>"
THINK_START = "<think>"


@dataclass
class Answer:
    """One sampled answer.

    Attributes:
        text: the judged answer: the decoded answer tokens, after the ``</think>`` marker for thinking models,
            stripped of surrounding whitespace and special tokens.
        reasoning: the reasoning before ``</think>`` (without ``<think>``), or ``None`` when there is no reasoning.
        mean_logprob: mean log-probability (natural log) of the answer tokens under the model, ``log p̄``; NaN when
            the answer has no tokens (e.g. a thinking model cut off before ``</think>``).
        num_tokens: number of answer tokens in the mean (the eos token included when the answer ended on it).
        finished: ``True`` when generation stopped on an eos token, ``False`` when cut by ``max_new_tokens``.
        token_ids: the answer token ids the mean is taken over (for re-scoring under another model).
    """

    text: str
    reasoning: str | None
    mean_logprob: float
    num_tokens: int
    finished: bool = True
    token_ids: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN ``mean_logprob`` becomes ``None``)."""
        record = asdict(self)
        if not math.isfinite(record["mean_logprob"]):
            record["mean_logprob"] = None
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Answer:
        """Inverse of :meth:`to_dict`."""
        mean_logprob = record.get("mean_logprob")
        return cls(
            text=record["text"],
            reasoning=record.get("reasoning"),
            mean_logprob=float("nan") if mean_logprob is None else float(mean_logprob),
            num_tokens=int(record["num_tokens"]),
            finished=bool(record.get("finished", True)),
            token_ids=[int(token) for token in record.get("token_ids", [])],
        )


@dataclass
class PromptSamples:
    """The ``k`` answers to one prompt.

    Attributes:
        prompt: the user prompt as given.
        answers: ``k`` :class:`Answer` objects, in sampling order.
        prompt_id: the caller's identifier (``prompt_ids``), or the prompt's index in the input list as a string.
    """

    prompt: str
    answers: list[Answer]
    prompt_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {"prompt": self.prompt, "prompt_id": self.prompt_id, "answers": [a.to_dict() for a in self.answers]}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> PromptSamples:
        """Inverse of :meth:`to_dict`."""
        return cls(
            prompt=record["prompt"],
            answers=[Answer.from_dict(answer) for answer in record["answers"]],
            prompt_id=record.get("prompt_id"),
        )


def split_reasoning(text: str, marker: str | None = THINK_END) -> tuple[str | None, str]:
    """Split a thinking model's output into reasoning and answer at the **first** ``marker``.

    Args:
        text: the decoded output.
        marker: end-of-reasoning marker; ``None`` never splits.

    Returns:
        ``(reasoning, answer)``: the text before the marker without a leading ``<think>`` and the text after it,
        both stripped; ``(None, text.strip())`` when the marker is absent.

    Example::

        >>> split_reasoning("<think>They ask about X.</think>\\n\\nX is ...")
        ('They ask about X.', 'X is ...')
    """
    if not marker or marker not in text:
        return None, text.strip()
    reasoning, _, answer = text.partition(marker)
    reasoning = reasoning.strip()
    if reasoning.startswith(THINK_START):
        reasoning = reasoning[len(THINK_START) :].strip()
    return reasoning, answer.strip()


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``seed`` and ``parts``, stable across processes (no ``hash()``)."""
    digest = hashlib.sha256(repr((int(seed), *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def answer_lengths(generated: torch.Tensor, eos_ids: Sequence[int]) -> tuple[list[int], list[bool]]:
    """Per row: number of generated tokens up to and including the first eos, and whether an eos was hit."""
    lengths, finished = [], []
    width = generated.shape[1]
    is_eos = torch.isin(generated, torch.tensor(list(eos_ids), device=generated.device)) if eos_ids else None
    for row in range(generated.shape[0]):
        hits = is_eos[row].nonzero() if is_eos is not None else []
        if len(hits):
            lengths.append(int(hits[0]) + 1)
            finished.append(True)
        else:
            lengths.append(width)
            finished.append(False)
    return lengths, finished


def _marker_token_index(tokenizer: Any, ids: Sequence[int], marker: str) -> int | None:
    """Smallest ``n`` such that ``decode(ids[:n])`` contains ``marker`` (binary search), or ``None``."""

    def contains(n: int) -> bool:
        return marker in tokenizer.decode(list(ids[:n]), skip_special_tokens=False)

    if not ids or not contains(len(ids)):
        return None
    low, high = 1, len(ids)
    while low < high:
        middle = (low + high) // 2
        if contains(middle):
            high = middle
        else:
            low = middle + 1
    return low


def split_answer_tokens(
    tokenizer: Any, content_ids: list[int], marker: str | None, thinking: bool | None
) -> tuple[str | None, str, int | None]:
    """Reasoning text, answer text and the index of the first answer token (``None``: no answer tokens)."""
    text = tokenizer.decode(content_ids, skip_special_tokens=True)
    if thinking is False or not marker:
        return None, text.strip(), 0
    start = _marker_token_index(tokenizer, content_ids, marker)
    if start is None:
        if thinking:  # a thinking model cut off (or stopped) before the end of its reasoning
            reasoning = text.strip()
            if reasoning.startswith(THINK_START):
                reasoning = reasoning[len(THINK_START) :].strip()
            return reasoning, "", None
        return None, text.strip(), 0
    if marker in text:
        reasoning, answer = split_reasoning(text, marker)
    else:  # the marker is a special token, removed by skip_special_tokens: split on tokens instead
        reasoning = tokenizer.decode(content_ids[:start], skip_special_tokens=True).strip()
        answer = tokenizer.decode(content_ids[start:], skip_special_tokens=True).strip()
        if reasoning.startswith(THINK_START):
            reasoning = reasoning[len(THINK_START) :].strip()
    return reasoning, answer, start


def check_sampling_arguments(
    prompts: Sequence[str],
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    prompt_ids: Sequence[str] | None,
) -> list[str]:
    """Validate the arguments of :func:`sample_answers` (shared by every sampling backend); return the prompts.

    Raises:
        ValueError: as documented in :func:`sample_answers`.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    bad = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str) or not prompt.strip()]
    if bad:
        raise ValueError(f"prompts must be non-empty strings; bad entries at positions {bad[:10]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_ids is not None and len(prompt_ids) != len(prompts):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} entries for {len(prompts)} prompts")
    if temperature == 0 and k > 1:
        warnings.warn(f"temperature=0 is greedy: the k={k} answers of each prompt will be identical", stacklevel=3)
    return prompts


def answer_from_tokens(
    tokenizer: Any,
    ids: Sequence[int],
    token_logprobs: torch.Tensor | Sequence[float],
    finished: bool,
    think_end: str | None = THINK_END,
    thinking: bool | None = None,
) -> Answer:
    """The :class:`Answer` of one generated token sequence, whatever generated it.

    Args:
        tokenizer: the model's tokenizer.
        ids: the generated token ids, up to and including the eos token when ``finished``.
        token_logprobs: ``[len(ids)]`` log-probability of each generated token under the model.
        finished: whether generation stopped on an eos token (the last of ``ids``).
        think_end: end-of-reasoning marker (see :func:`sample_answers`).
        thinking: reasoning handling (see :func:`sample_answers`).

    Returns:
        The answer: text and reasoning split at ``think_end``, ``mean_logprob`` over the answer tokens (eos included,
        reasoning excluded).
    """
    ids = list(ids)
    content = ids[:-1] if finished else ids
    reasoning, text, first = split_answer_tokens(tokenizer, content, think_end, thinking)
    segment = slice(len(ids), len(ids)) if first is None else slice(first, len(ids))
    logprobs = torch.as_tensor(token_logprobs, dtype=torch.float32)[segment]
    return Answer(
        text=text,
        reasoning=reasoning,
        mean_logprob=float(logprobs.mean()) if len(logprobs) else float("nan"),
        num_tokens=len(logprobs),
        finished=finished,
        token_ids=ids[segment],
    )
