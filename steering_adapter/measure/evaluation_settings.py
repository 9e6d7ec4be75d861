"""What a before / after evaluation measures besides the refusal rates, and how it runs.

:class:`EvaluationSettings` is the one value :func:`~steering_adapter.measure.evaluation.evaluate` (and the selection
sweep, which evaluates every point with it) takes for everything that is not the model, the prompt sets, the judge or
the sampling settings (:class:`~steering_adapter.measure.sampling.settings.SamplingSettings`, which key the answer
records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from steering_adapter.measure.refusal_score import check_unparseable

if TYPE_CHECKING:
    from steering_adapter.measure.relevance import RelevanceScorer

__all__ = ["EvaluationSettings"]


@dataclass(frozen=True)
class EvaluationSettings:
    """The measurements of an evaluation beyond the refusal rates, and how it is run.

    None of these change the answer records (only :class:`~steering_adapter.measure.sampling.settings.SamplingSettings`
    does), so a resumed evaluation may change them and still reuse every sampled and judged answer.

    Attributes:
        kl_prompts: neutral prompts for the KL divergence from the base model (skipped when ``None``); the
            transformers backend keeps their base distributions, so repeated evaluations of one sampler compute them
            once.
        kl_tokens: positions per KL prompt (the last ones; ``None``: all), see
            :class:`~steering_adapter.measure.likelihood.NextTokenKL`.
        perplexity_texts: reference texts for perplexity under each condition (skipped when ``None``).
        relevance: a :class:`~steering_adapter.measure.relevance.RelevanceScorer` for the answers' relevance to their
            prompts (skipped when ``None``).
        quality: also measure repetition and the answers' perplexity under the base model (one teacher-forced pass
            with steering off over the steered answers; the base answers' own log-probabilities are reused).
        samples: base / steered answer pairs kept per target set for the report (both conditions needed).
        batch_size: prompts per sampling / forward batch.
        progress: show tqdm bars.
        plots: write the PNG plots (a histogram per set and condition, the refusal-rate bars).
        judge_agreement: the judge's agreement with the labeled answers
            (:func:`~steering_adapter.measure.judge_agreement.judge_agreement_summary`), named beside every refusal
            rate of the report (``None``: not measured, and the report says so).
        unparseable: what an unparseable judgment (label 0) does in the refusal confidence ``c(x)``: ``"keep"``
            (default, the authors' code: weight, value 0) or ``"drop"`` (see
            :func:`~steering_adapter.measure.refusal_score.refusal_confidence`); the scores are recomputed from the
            recorded labels, so changing it samples and judges nothing again.
    """

    kl_prompts: Sequence[str] | None = None
    kl_tokens: int | None = 16
    perplexity_texts: Sequence[str] | None = None
    relevance: RelevanceScorer | None = None
    quality: bool = True
    samples: int = 3
    batch_size: int = 8
    progress: bool = True
    plots: bool = True
    judge_agreement: Mapping[str, Any] | None = None
    unparseable: Literal["keep", "drop"] = "keep"

    def __post_init__(self) -> None:
        for name in ("kl_prompts", "perplexity_texts"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of texts, not one string")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.kl_tokens is not None and self.kl_tokens < 1:
            raise ValueError(f"kl_tokens must be >= 1 or None, got {self.kl_tokens}")
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_unparseable(self.unparseable)
