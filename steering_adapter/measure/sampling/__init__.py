"""Sampling K answers per prompt: prompt encoding, the transformers backend, answer records and log-probabilities.

Modules: ``prompt_encoding`` (the one prompt encoder: chat template, special tokens, left padding), ``answers``
(:class:`Answer` / :class:`PromptSamples` records shared by every backend), ``batches`` (left-padded batches and
cache-free forward arguments), ``logprobs`` (answer log-probabilities), ``generation`` (:func:`sample_answers`,
:func:`gate_decisions`) and ``backend`` (the :class:`Sampler` protocol the measuring stages take).

Public names are imported on first use (importing one sampling module does not pull in the backend); type
checkers see them through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.utils.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from steering_adapter.measure.sampling.answers import (
        THINK_END,
        THINK_START,
        Answer,
        PromptSamples,
        answer_from_tokens,
        answer_lengths,
        check_sampling_arguments,
        derive_seed,
        split_answer_tokens,
        split_reasoning,
    )
    from steering_adapter.measure.sampling.backend import Sampler, TransformersSampler, as_sampler
    from steering_adapter.measure.sampling.batches import forward_inputs, prompt_batches
    from steering_adapter.measure.sampling.generation import gate_decisions, sample_answers
    from steering_adapter.measure.sampling.logprobs import StepLogprobs, answer_logprobs
    from steering_adapter.measure.sampling.prompt_encoding import (
        encode_prompts,
        encode_texts,
        format_chat,
        format_prompts,
        input_device,
        pad_batch,
        padding_id,
        stop_token_ids,
        user_conversation,
    )
    from steering_adapter.measure.sampling.settings import SamplingSettings

_EXPORTS = {
    "THINK_END": "answers",
    "THINK_START": "answers",
    "Answer": "answers",
    "PromptSamples": "answers",
    "Sampler": "backend",
    "SamplingSettings": "settings",
    "StepLogprobs": "logprobs",
    "TransformersSampler": "backend",
    "answer_from_tokens": "answers",
    "answer_lengths": "answers",
    "answer_logprobs": "logprobs",
    "as_sampler": "backend",
    "check_sampling_arguments": "answers",
    "derive_seed": "answers",
    "encode_prompts": "prompt_encoding",
    "encode_texts": "prompt_encoding",
    "format_chat": "prompt_encoding",
    "format_prompts": "prompt_encoding",
    "forward_inputs": "batches",
    "gate_decisions": "generation",
    "input_device": "prompt_encoding",
    "pad_batch": "prompt_encoding",
    "padding_id": "prompt_encoding",
    "prompt_batches": "batches",
    "sample_answers": "generation",
    "split_answer_tokens": "answers",
    "split_reasoning": "answers",
    "stop_token_ids": "prompt_encoding",
    "user_conversation": "prompt_encoding",
}

__all__ = [
    "Answer",
    "PromptSamples",
    "Sampler",
    "SamplingSettings",
    "StepLogprobs",
    "THINK_END",
    "THINK_START",
    "TransformersSampler",
    "answer_from_tokens",
    "answer_lengths",
    "answer_logprobs",
    "as_sampler",
    "check_sampling_arguments",
    "derive_seed",
    "encode_prompts",
    "encode_texts",
    "format_chat",
    "format_prompts",
    "forward_inputs",
    "gate_decisions",
    "input_device",
    "pad_batch",
    "padding_id",
    "prompt_batches",
    "sample_answers",
    "split_answer_tokens",
    "split_reasoning",
    "stop_token_ids",
    "user_conversation",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
