"""Sampling backends: one object that answers prompts, switches steering off, and attaches candidate adapters.

The measuring stages (:func:`~steering_adapter.measure.scored_runs.score_prompts`,
:func:`~steering_adapter.measure.evaluation.evaluate`, :func:`~steering_adapter.run.selection.sweep_layers_and_scale`)
take either
a transformers model or a *sampler*, an object with the methods of :class:`Sampler`. A model is wrapped in a
:class:`TransformersSampler` (:func:`as_sampler`); :class:`steering_adapter.runtimes.vllm.VllmSampler` is the vLLM
backend.
Both give the same records: :class:`~steering_adapter.measure.sampling.generation.PromptSamples` with the mean token
log-probability
of each answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from steering_adapter.adapter.builder import adapter_from_vectors
from steering_adapter.measure.likelihood import NextTokenKL, perplexity
from steering_adapter.measure.sampling.answers import PromptSamples
from steering_adapter.measure.sampling.generation import gate_decisions, sample_answers
from steering_adapter.measure.sampling.logprobs import answer_logprobs
from steering_adapter.tuner.model import set_adapter_scale, steering_disabled

__all__ = ["Sampler", "TransformersSampler", "as_sampler"]


@runtime_checkable
class Sampler(Protocol):
    """What the measuring stages need from a backend.

    Optional: ``gate_decisions(prompts, adapter_name, *, batch_size, system_prompt=None, chat_template_kwargs=None)
    -> list[bool]`` (see :meth:`TransformersSampler.gate_decisions`); a backend that has it lets a sweep of gated
    candidates reuse the base answers of the prompts their gate leaves alone instead of sampling them again.
    """

    def sample_answers(self, prompts: Sequence[str], **settings: Any) -> list[PromptSamples]:
        """Answers as :func:`~steering_adapter.measure.sampling.generation.sample_answers` returns them (same keyword
        settings)."""

    def steering_disabled(self) -> AbstractContextManager:
        """A context in which every attached adapter is off (the base model)."""

    def next_token_kl(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int,
        progress: bool,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
    ) -> dict[str, float]:
        """:func:`~steering_adapter.measure.likelihood.next_token_kl` of the attached adapters (the last ``max_tokens``
        positions of each prompt, formatted with ``system_prompt``)."""

    def perplexity(self, texts: Sequence[str], *, batch_size: int, progress: bool) -> float:
        """:func:`~steering_adapter.measure.likelihood.perplexity` with the current steering."""

    def answer_logprobs(
        self,
        prompts: Sequence[str],
        answer_token_ids: Sequence[Sequence[int]],
        *,
        batch_size: int,
        system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """:func:`~steering_adapter.measure.sampling.generation.answer_logprobs` with the current steering."""

    def add_adapter(
        self, name: str, vectors: dict[int, torch.Tensor], *, condition: torch.Tensor | None = None, **config: Any
    ) -> None:
        """Attach a steering adapter made of ``vectors`` (``config``: :class:`SteeringConfig` fields), inactive."""

    def activate(self, name: str) -> None:
        """Make ``name`` the one active adapter."""

    def set_scale(self, name: str, scale: float) -> None:
        """Change α of the attached adapter ``name``."""

    def remove_adapters(self) -> None:
        """Detach every adapter attached with :meth:`add_adapter`."""


class TransformersSampler:
    """The transformers backend: a model (with or without adapters) and its tokenizer.

    Args:
        model: a transformers causal LM, a ``PeftModel``, or a model with adapters from ``load_adapter``.
        tokenizer: its tokenizer.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._base: nn.Module | None = None
        self._kl: dict[tuple, NextTokenKL] = {}

    def sample_answers(self, prompts: Sequence[str], **settings: Any) -> list[PromptSamples]:
        return sample_answers(self.model, self.tokenizer, prompts, **settings)

    def steering_disabled(self) -> AbstractContextManager:
        return steering_disabled(self.model)

    def next_token_kl(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int,
        progress: bool,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
    ) -> dict[str, float]:
        """As :class:`~steering_adapter.measure.likelihood.NextTokenKL`; the base side of each prompt set is computed
        once
        per sampler and reused by every later call (e.g. every point of a sweep)."""
        key = (tuple(prompts), max_tokens, system_prompt, batch_size)
        if key not in self._kl:
            self._kl[key] = NextTokenKL(
                self.tokenizer,
                list(prompts),
                max_tokens=max_tokens,
                batch_size=batch_size,
                system_prompt=system_prompt,
                progress=progress,
            )
        return self._kl[key].measure(self.model)

    def perplexity(self, texts: Sequence[str], *, batch_size: int, progress: bool) -> float:
        return perplexity(self.model, self.tokenizer, list(texts), batch_size=batch_size, progress=progress)

    def answer_logprobs(
        self,
        prompts: Sequence[str],
        answer_token_ids: Sequence[Sequence[int]],
        *,
        batch_size: int,
        system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        return answer_logprobs(
            self.model,
            self.tokenizer,
            prompts,
            answer_token_ids,
            batch_size=batch_size,
            system_prompt=system_prompt,
            chat_template_kwargs=chat_template_kwargs,
        )

    def gate_decisions(
        self,
        prompts: Sequence[str],
        adapter_name: str,
        *,
        batch_size: int,
        system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[bool]:
        """:func:`~steering_adapter.measure.sampling.generation.gate_decisions` of the attached gated adapter
        ``adapter_name``."""
        return gate_decisions(
            self.model,
            self.tokenizer,
            prompts,
            adapter_name,
            batch_size=batch_size,
            system_prompt=system_prompt,
            chat_template_kwargs=chat_template_kwargs,
        )

    def add_adapter(
        self, name: str, vectors: dict[int, torch.Tensor], *, condition: torch.Tensor | None = None, **config: Any
    ) -> None:

        if self._base is None:
            self._base = self.model
        self.model = adapter_from_vectors(self.model, vectors, adapter_name=name, condition=condition, **config)

    def activate(self, name: str) -> None:
        self.model.base_model.set_adapter(name)

    def set_scale(self, name: str, scale: float) -> None:
        set_adapter_scale(self.model, scale, name)

    def remove_adapters(self) -> None:
        if self._base is not None:
            self.model.unload()
            self.model, self._base = self._base, None


def as_sampler(model: Any, tokenizer: Any = None) -> Sampler:
    """A :class:`TransformersSampler` around a torch model; any other object must already be a :class:`Sampler`.

    Raises:
        TypeError: neither a torch model nor an object with the :class:`Sampler` methods.
    """
    if isinstance(model, nn.Module):
        return TransformersSampler(model, tokenizer)
    if not isinstance(model, Sampler):
        raise TypeError(
            f"expected a torch model or a sampler (steering_adapter.measure.sampling.backend.Sampler), got {model!r}"
        )
    return model
