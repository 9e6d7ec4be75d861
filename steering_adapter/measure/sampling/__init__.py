"""Sampling K answers per prompt: prompt encoding, the transformers backend, answer records and log-probabilities.

Modules: ``prompt_encoding`` (the one prompt encoder: chat template, special tokens, left padding), ``answers``
(:class:`Answer` / :class:`PromptSamples` records shared by every backend), ``batches`` (left-padded batches and
cache-free forward arguments), ``logprobs`` (answer log-probabilities), ``generation`` (:func:`sample_answers`,
:func:`gate_decisions`) and ``backend`` (the :class:`Sampler` protocol the measuring stages take).
"""

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

__all__ = [
    "THINK_END",
    "THINK_START",
    "Answer",
    "PromptSamples",
    "Sampler",
    "SamplingSettings",
    "StepLogprobs",
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
