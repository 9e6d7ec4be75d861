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

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import StoppingCriteriaList

from steering_adapter.measure.sampling.answers import (
    THINK_END,
    Answer,
    PromptSamples,
    answer_from_tokens,
    answer_lengths,
    check_sampling_arguments,
    derive_seed,
)
from steering_adapter.measure.sampling.batches import forward_inputs, prompt_batches
from steering_adapter.measure.sampling.logprobs import StepLogprobs
from steering_adapter.measure.sampling.prompt_encoding import format_prompts, input_device, padding_id, stop_token_ids
from steering_adapter.tuner.model import gate_state

__all__ = ["gate_decisions", "sample_answers"]


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
        batches = prompt_batches(tokenizer, texts, batch_size, pad_id, device)
        for batch_index, (start, input_ids, attention_mask) in enumerate(batches):
            recorder = StepLogprobs(model)
            with torch.no_grad(), torch.random.fork_rng(devices=fork_devices), recorder:
                torch.manual_seed(derive_seed(seed, "batch", batch_index))
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
            lengths, finished = answer_lengths(generated, eos_ids)
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
    prompts = check_sampling_arguments(prompts, 1, 1, 1.0, 1.0, batch_size, None)
    gate = gate_state(model, adapter_name)
    if gate is None:
        raise ValueError(f"steering adapter {adapter_name!r} is not condition-gated: it has no gate to decide")
    pad_id = padding_id(tokenizer, stop_token_ids(model, tokenizer))
    device = input_device(model)
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs)
    decisions: list[bool] = []
    for _, input_ids, attention_mask in prompt_batches(tokenizer, texts, batch_size, pad_id, device):
        gate.reset()  # a fresh decision even when the same batch was seen last
        model(**forward_inputs(model, input_ids, attention_mask, 1))
        if gate.gate is None or gate.pending or gate.gate.shape[0] != input_ids.shape[0]:
            raise RuntimeError(
                f"the gate of steering adapter {adapter_name!r} was not decided: activate the adapter and leave "
                "steering enabled"
            )
        decisions.extend(bool(value) for value in gate.gate.tolist())
    return decisions
