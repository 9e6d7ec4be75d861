"""Sampling K answers per prompt, with the model's own log-probability of each answer.

This is the first measuring stage of the refusal-confidence score (``docs/method.md`` §1): for each prompt ``x`` the
model under study (a plain transformers model, one with steering adapters loaded, or a ``PeftModel``) answers ``K``
times; each answer keeps its text, the reasoning of thinking models, and ``mean_logprob``, the mean token
log-probability of the answer tokens (``log p̄_k``, whose softmax weights the judge labels in
:func:`~steering_adapter.measure.refusal_score.refusal_confidence`).

Choices, all documented where they are made:

- **Formatting**: the one prompt encoder of :mod:`steering_adapter.measure.sampling.prompt_encoding` (chat template,
  optional system
  turn, special tokens once, left padding by hand), shared with activation collection, the gate, KL and the judge.
- **Sampling**: ``temperature > 0`` samples ``k`` answers per prompt with ``num_return_sequences=k``, ``top_p`` and
  ``top_k`` (``0`` = off, like the authors' vLLM ``top_k=-1``; transformers would otherwise default to 50).
  ``temperature == 0`` decodes greedily once per prompt and repeats that answer ``k`` times.
- **Seeds**: each batch is sampled under its own seed derived from ``seed`` and the batch index, inside
  ``torch.random.fork_rng`` (the caller's global RNG state is left alone). The same prompts, ``batch_size`` and seed
  give the same answers on the same hardware.
- **Log-probabilities**: taken during generation, from the model's own forward output at each step: the
  ``log_softmax`` of the **raw** logits (before temperature, top-p or top-k; after any logit soft-capping the model
  applies itself), i.e. the model's own distribution at temperature 1, gathered at the token that step produced. This
  is what vLLM returns by default (the authors' code) and it does not depend on the sampling temperature. Only one
  ``[rows, vocab]`` row per step is held at a time (no second, teacher-forced pass and no per-step logits kept);
  :func:`answer_logprobs` gives the teacher-forced values of given answers under any model (e.g. the base model).
- **Answer tokens**: the generated tokens up to and including the first end-of-sequence token (any of the model's
  ``generation_config.eos_token_id`` and the tokenizer's ``eos_token_id``); the eos token is part of the answer's
  likelihood, as in vLLM's token list. For thinking models, only the tokens after the token that completes the
  ``</think>`` marker count, and the answer text is the text after the marker.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from steering_adapter.measure.sampling.prompt_encoding import (
    encode_texts,
    format_chat,
    format_prompts,
    input_device,
    pad_batch,
    padding_id,
    stop_token_ids,
    user_conversation,
)
from steering_adapter.tuner.token_positions import position_ids_from_mask

__all__ = [
    "Answer",
    "PromptSamples",
    "StepLogprobs",
    "answer_logprobs",
    "answer_from_tokens",
    "check_sampling_arguments",
    "THINK_END",
    "format_chat",
    "gate_decisions",
    "user_conversation",
    "sample_answers",
    "split_reasoning",
]

THINK_END = "</think>"
THINK_START = "<think>"

# Upper bound on the number of logit entries (rows x answer positions x vocabulary) materialised at once in the
# log-probability pass; rows are processed in chunks to stay under it (about 1 GiB of float32).
_LOGITS_BUDGET = 2**28


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


def _derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``seed`` and ``parts``, stable across processes (no ``hash()``)."""
    digest = hashlib.sha256(repr((int(seed), *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def _answer_lengths(generated: torch.Tensor, eos_ids: Sequence[int]) -> tuple[list[int], list[bool]]:
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


def _split_tokens(
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


def _prompt_batches(
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


def _forward_kwargs(model: nn.Module) -> tuple[bool, bool]:
    """Whether the underlying transformers model accepts ``position_ids`` and ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    return "position_ids" in parameters, "logits_to_keep" in parameters


def _forward_inputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int
) -> dict[str, Any]:
    """Arguments of one cache-free forward pass over a left-padded batch: positions counted from each row's first
    real token, and logits for the last ``logits_to_keep`` positions only (where the model takes them)."""
    takes_positions, takes_logits_to_keep = _forward_kwargs(model)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if takes_positions:
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    if takes_logits_to_keep:
        kwargs["logits_to_keep"] = logits_to_keep
    return kwargs


@torch.no_grad()
def _token_logprobs(
    model: nn.Module,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    lengths: Sequence[int],
) -> list[torch.Tensor]:
    """Log-probabilities (float32, raw logits) of each row's first ``lengths[r]`` generated tokens.

    Args:
        sequences: ``[rows, prompt_width + new]`` left-padded prompts followed by the generated tokens.
        attention_mask: ``[rows, prompt_width + new]``, ``0`` on left padding and after each answer's end.
        prompt_width: width of the (padded) prompt part.
        lengths: answer lengths per row.

    Returns:
        One ``[lengths[r]]`` tensor per row, on CPU.
    """
    rows, total = sequences.shape
    new = total - prompt_width
    _, takes_logits_to_keep = _forward_kwargs(model)
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else 1
    kept = new + 1 if takes_logits_to_keep else total
    chunk = max(1, _LOGITS_BUDGET // max(1, kept * vocab))
    results: list[torch.Tensor] = []
    for start in range(0, rows, chunk):
        ids = sequences[start : start + chunk]
        logits = model(**_forward_inputs(model, ids, attention_mask[start : start + chunk], new + 1)).logits
        # logits[:, j] predicts the token after position j; keep the ones predicting the generated tokens.
        logits = logits[:, -(new + 1) : -1]
        for offset in range(ids.shape[0]):
            length = lengths[start + offset]
            targets = ids[offset, prompt_width : prompt_width + length]
            logprobs = torch.log_softmax(logits[offset, :length].float(), dim=-1)
            results.append(logprobs.gather(-1, targets[:, None].to(logprobs.device))[:, 0].cpu())
    return results


class StepLogprobs(StoppingCriteria):
    """Records, during ``generate``, the log-probability of each produced token under the model's raw logits.

    A forward hook on the causal LM keeps ``log_softmax`` of the last position's logits of the current step (one
    ``[rows, vocab]`` float32 tensor, replaced every step); ``generate`` calls this object as a stopping criterion
    right after it appends the step's token, which is then gathered from that row. It never stops generation.

    Use as a context manager around ``generate`` (the hook is removed on exit) and pass it in ``stopping_criteria``.

    Args:
        model: the model whose ``generate`` is called (a transformers model, with or without adapters, or a
            ``PeftModel``); the hook sits on the innermost transformers causal LM, whose output carries the logits.
    """

    def __init__(self, model: nn.Module) -> None:
        self.module = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._handle: Any = None
        self._pending: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def __enter__(self) -> StepLogprobs:
        self._steps, self._pending = [], None
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, _module: nn.Module, _args: Any, output: Any) -> None:
        logits = output["logits"] if isinstance(output, Mapping) else output.logits
        self._pending = torch.log_softmax(logits[:, -1, :].float(), dim=-1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self._pending is None:
            raise RuntimeError("StepLogprobs saw a generated token without the model's logits for it")
        token = input_ids[:, -1:].to(self._pending.device)
        self._steps.append(self._pending.gather(-1, token)[:, 0].cpu())
        self._pending = None
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def result(self, generated: torch.Tensor) -> list[torch.Tensor]:
        """Per row, the log-probabilities of the ``generated`` tokens ``[rows, new]`` (float32 on CPU).

        Raises:
            RuntimeError: when the number of recorded steps does not match the generated width.
        """
        if len(self._steps) != generated.shape[1]:
            raise RuntimeError(f"recorded {len(self._steps)} steps for {generated.shape[1]} generated tokens")
        if not self._steps:
            return [torch.empty(0) for _ in range(generated.shape[0])]
        table = torch.stack(self._steps, dim=1)
        return list(table.unbind(0))


@torch.no_grad()
def answer_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answer_token_ids: Sequence[Sequence[int]],
    *,
    system_prompt: str | None = None,
    batch_size: int = 8,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[torch.Tensor]:
    """Teacher-forced log-probabilities of given answers under ``model`` (e.g. the base model scoring steered answers).

    Args:
        model: a causal LM (adapters as they are: wrap the call in ``steering_disabled`` for the base model).
        tokenizer: its tokenizer.
        prompts: user prompts, formatted exactly as :func:`sample_answers` formats them.
        answer_token_ids: per prompt, the answer tokens (e.g. :attr:`Answer.token_ids`).
        system_prompt: the system message used when sampling.
        batch_size: rows per forward pass.
        chat_template_kwargs: extra chat-template variables.

    Returns:
        One float32 ``[len(answer_token_ids[i])]`` tensor per prompt, on CPU.
    """
    if len(prompts) != len(answer_token_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(answer_token_ids)} answers")
    eos_ids = stop_token_ids(model, tokenizer)
    pad_id = padding_id(tokenizer, eos_ids)
    device = input_device(model)
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs)
    results: list[torch.Tensor] = []
    for start, input_ids, attention_mask in _prompt_batches(tokenizer, texts, batch_size, pad_id, device):
        answers = [list(ids) for ids in answer_token_ids[start : start + batch_size]]
        lengths = [len(ids) for ids in answers]
        new = max(lengths + [1])
        tail = torch.full((len(answers), new), pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(answers), new), dtype=torch.long)
        for row, ids in enumerate(answers):
            tail[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            tail_mask[row, : len(ids)] = 1
        sequences = torch.cat([input_ids, tail.to(device)], dim=1)
        mask = torch.cat([attention_mask, tail_mask.to(device)], dim=1)
        results += _token_logprobs(model, sequences, mask, input_ids.shape[1], lengths)
    return results


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
    reasoning, text, first = _split_tokens(tokenizer, content, think_end, thinking)
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


def sample_answers(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    k: int = 5,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 8,
    system_prompt: str | None = None,
    progress: bool = True,
    prompt_ids: Sequence[str] | None = None,
    thinking: bool | None = None,
    think_end: str | None = THINK_END,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    generate_kwargs: Mapping[str, Any] | None = None,
) -> list[PromptSamples]:
    """Sample ``k`` answers per prompt and the mean log-probability of each answer.

    Args:
        model: a causal LM (transformers model, with or without loaded adapters, or a ``PeftModel``); used as is
            (put it in ``eval()`` mode yourself).
        tokenizer: its tokenizer.
        prompts: user prompts.
        k: answers per prompt (``K``; the authors use 5).
        max_new_tokens: generation budget per answer (reasoning included for thinking models).
        temperature: sampling temperature (authors: 1.0); ``0`` means greedy decoding, done once per prompt and
            repeated ``k`` times (use ``k=1``).
        top_p: nucleus sampling mass (``1.0`` = off).
        top_k: top-k sampling (``0`` = off).
        seed: base seed; each batch uses a seed derived from it and the batch index.
        batch_size: prompts per ``generate`` call (each expands to ``k`` rows).
        system_prompt: optional system message before each prompt.
        progress: show a tqdm bar over prompts.
        prompt_ids: identifiers stored in :attr:`PromptSamples.prompt_id`; default the index as a string.
        thinking: ``None`` splits reasoning off when ``think_end`` appears in the output; ``True`` marks a model that
            always reasons first (no marker: the answer is empty and ``mean_logprob`` NaN); ``False`` never splits.
        think_end: end-of-reasoning marker.
        chat_template_kwargs: extra chat-template variables (e.g. ``{"enable_thinking": True}``).
        generate_kwargs: extra ``model.generate`` arguments (e.g. ``repetition_penalty``, ``logits_processor``).

    Returns:
        One :class:`PromptSamples` per prompt, in input order, each with ``k`` :class:`Answer` objects.
        ``mean_logprob`` is recorded during generation from the model's own logits at each step (raw logits,
        temperature 1, no top-p/top-k), whatever the sampling temperature.

    Raises:
        ValueError: empty or non-string prompts, ``k < 1``, ``temperature < 0``, ``top_p`` outside ``(0, 1]``,
            ``batch_size < 1``, ``max_new_tokens < 1``, ``prompt_ids`` of the wrong length.
    """
    prompts = check_sampling_arguments(prompts, k, max_new_tokens, temperature, top_p, batch_size, prompt_ids)
    greedy = temperature == 0

    eos_ids = stop_token_ids(model, tokenizer)
    pad_id = padding_id(tokenizer, eos_ids)
    device = input_device(model)
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs)
    generation: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad_id,
        "eos_token_id": eos_ids or None,
    }
    if greedy:
        generation.update(do_sample=False, num_return_sequences=1)
    else:
        generation.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k, num_return_sequences=k)
    generation.update(generate_kwargs or {})
    user_criteria = list(generation.pop("stopping_criteria", None) or [])
    rows_per_prompt = 1 if greedy else k
    fork_devices = [device] if device.type == "cuda" else []

    results: list[PromptSamples] = []
    bar = tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=not progress)
    try:
        batches = _prompt_batches(tokenizer, texts, batch_size, pad_id, device)
        for batch_index, (start, input_ids, attention_mask) in enumerate(batches):
            recorder = StepLogprobs(model)
            with torch.no_grad(), torch.random.fork_rng(devices=fork_devices), recorder:
                torch.manual_seed(_derive_seed(seed, "batch", batch_index))
                sequences = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    stopping_criteria=StoppingCriteriaList([*user_criteria, recorder]),
                    **generation,
                )
            if not isinstance(sequences, torch.Tensor):  # return_dict_in_generate=True passed by the caller
                sequences = sequences.sequences
            width = input_ids.shape[1]
            generated = sequences[:, width:]
            lengths, finished = _answer_lengths(generated, eos_ids)
            token_logprobs = recorder.result(generated)

            for offset, prompt in enumerate(prompts[start : start + batch_size]):
                answers = []
                for row in range(offset * rows_per_prompt, (offset + 1) * rows_per_prompt):
                    ids = generated[row, : lengths[row]].tolist()
                    answers.append(
                        answer_from_tokens(tokenizer, ids, token_logprobs[row], finished[row], think_end, thinking)
                    )
                if greedy:
                    answers = [answers[0]] + [Answer(**asdict(answers[0])) for _ in range(k - 1)]
                index = start + offset
                prompt_id = str(prompt_ids[index]) if prompt_ids is not None else str(index)
                results.append(PromptSamples(prompt=prompt, answers=answers, prompt_id=prompt_id))
            bar.update(input_ids.shape[0])
    finally:
        bar.close()
    return results


@torch.no_grad()
def gate_decisions(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    adapter_name: str,
    *,
    batch_size: int = 8,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[bool]:
    """Whether the gate of the active condition-gated adapter ``adapter_name`` opens for each prompt.

    The prompts are formatted, batched (``batch_size`` per batch, in order) and left-padded exactly as
    :func:`sample_answers` feeds them to ``generate``, and run through one forward pass each; the condition block
    decides the gates as it does on the first step of generation. Where a gate stays closed the adapter leaves that
    prompt's forward passes unchanged, so its answers are the base model's.

    Args:
        model: a model with the gated steering adapter ``adapter_name`` attached and active (steering not disabled).
        tokenizer: its tokenizer.
        prompts: ``B`` user prompts.
        adapter_name: the gated adapter.
        batch_size: prompts per forward pass (the ``batch_size`` the answers are sampled with).
        system_prompt: optional system message before each prompt.
        chat_template_kwargs: extra chat-template variables.

    Returns:
        ``B`` booleans, ``True`` where the gate opens (the prompt is steered).

    Raises:
        ValueError: the adapter is not condition-gated, empty or non-string prompts, ``batch_size < 1``.
        RuntimeError: the gate was not decided (the adapter is not active, or steering is disabled).
    """
    from steering_adapter.tuner.model import gate_state

    prompts = check_sampling_arguments(prompts, 1, 1, 1.0, 1.0, batch_size, None)
    gate = gate_state(model, adapter_name)
    if gate is None:
        raise ValueError(f"steering adapter {adapter_name!r} is not condition-gated: it has no gate to decide")
    pad_id = padding_id(tokenizer, stop_token_ids(model, tokenizer))
    device = input_device(model)
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs)
    decisions: list[bool] = []
    for _, input_ids, attention_mask in _prompt_batches(tokenizer, texts, batch_size, pad_id, device):
        gate.reset()  # a fresh decision even when the same batch was seen last
        model(**_forward_inputs(model, input_ids, attention_mask, 1))
        if gate.gate is None or gate.pending or gate.gate.shape[0] != input_ids.shape[0]:
            raise RuntimeError(
                f"the gate of steering adapter {adapter_name!r} was not decided: activate the adapter and leave "
                "steering enabled"
            )
        decisions.extend(bool(value) for value in gate.gate.tolist())
    return decisions
