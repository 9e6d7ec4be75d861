"""Answer quality: whether steered answers still answer — relevance with its interval, repetition, and how likely
the base model finds them.

A pattern judge counts a vacuous, off-topic or looping answer as compliance; these measures catch what it misses:

- **relevance** (:mod:`steering_adapter.measure.relevance`): cosine between prompt and answer embeddings, averaged per
  prompt
  over its K answers, then over prompts with a t-interval (so a handful of prompts cannot decide alone);
- **repetition**: the share of an answer's token n-grams that repeat an earlier n-gram of the same answer (looping
  output scores near 1, ordinary prose near 0);
- **base perplexity**: ``exp(−mean log p)`` of the answer tokens under the *base* model (steering off). Garbled text
  the base model would never write scores far above the base model's own answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["mean_interval", "median", "repetition_rate", "summarize_quality"]


def repetition_rate(token_ids: Sequence[int], n: int = 3) -> float:
    """Share of the ``n``-grams of ``token_ids`` that already occurred earlier in the same sequence.

    Args:
        token_ids: one answer's tokens.
        n: n-gram length.

    Returns:
        ``repeated / total`` in ``[0, 1)``; ``0.0`` when the answer has fewer than ``n + 1`` tokens.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    if len(grams) < 2:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` with a two-sided Student-t confidence interval.

    Args:
        values: one value per unit (e.g. per prompt); non-finite values are dropped.
        confidence: coverage of the interval.

    Returns:
        ``(mean, low, high)``; with one value the interval is that value; NaNs when there is none.
    """
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return mean, mean, mean
    from scipy.stats import t  # lazy: scipy.stats takes a second to import; only the intervals need it

    variance = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    half = float(t.ppf(0.5 + confidence / 2, len(finite) - 1)) * math.sqrt(variance / len(finite))
    return mean, mean - half, mean + half


def median(values: Sequence[float]) -> float:
    """Median of the finite ``values`` (NaN when there is none)."""
    finite = sorted(float(v) for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    middle = len(finite) // 2
    return finite[middle] if len(finite) % 2 else (finite[middle - 1] + finite[middle]) / 2


def summarize_quality(
    relevance_per_prompt: Sequence[float] | None,
    repetition: Sequence[float],
    base_logprobs: Sequence[float],
) -> dict[str, Any]:
    """The quality fields an evaluation stores per set and condition.

    Args:
        relevance_per_prompt: mean prompt/answer relevance of each prompt's answers (``None``: not measured).
        repetition: :func:`repetition_rate` of every answer.
        base_logprobs: mean token log-probability of every answer under the base model (NaN for empty answers).

    Returns:
        ``mean_relevance`` and ``relevance_interval`` ``[low, high]`` (95 %, over prompts) when measured,
        ``repetition`` (mean over answers) and ``base_perplexity`` (median over answers of ``exp(−mean log p)``).
    """
    out: dict[str, Any] = {}
    if relevance_per_prompt is not None:
        mean, low, high = mean_interval(relevance_per_prompt)
        out["mean_relevance"] = mean
        out["relevance_interval"] = [low, high]
    out["repetition"] = sum(repetition) / len(repetition) if repetition else math.nan
    out["base_perplexity"] = median([math.exp(-lp) for lp in base_logprobs if math.isfinite(lp)])
    return out
