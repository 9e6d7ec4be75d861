"""Measuring refusals: sampling answers, judging them, the refusal confidence c(x), resumable scored runs, KL /
perplexity, answer quality and relevance, before/after evaluation, prompt sets and jailbreak sets.

Public names are imported on first use (the judges, the evaluation and the plots pull in more than a sampling
call needs); type checkers see them through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.utils.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from steering_adapter.measure.answer_quality import repetition_rate, summarize_quality
    from steering_adapter.measure.evaluation import EvalSet, evaluate
    from steering_adapter.measure.evaluation_report import EvaluationReport
    from steering_adapter.measure.evaluation_settings import EvaluationSettings
    from steering_adapter.measure.jailbreaks import attack_success, wrap_prompts
    from steering_adapter.measure.judges import (
        Judge,
        Judgment,
        LLMJudge,
        OpenAIChatBackend,
        PatternJudge,
        TransformersJudgeBackend,
        parse_judge_output,
    )
    from steering_adapter.measure.likelihood import NextTokenKL, next_token_kl, perplexity
    from steering_adapter.measure.prompt_sets import PromptSet, list_prompt_sets, load_prompt_set, split_prompts
    from steering_adapter.measure.refusal_score import classify, refusal_confidence, summarize
    from steering_adapter.measure.relevance import RelevanceScorer
    from steering_adapter.measure.sampling import (
        Answer,
        PromptSamples,
        Sampler,
        SamplingSettings,
        TransformersSampler,
        as_sampler,
        sample_answers,
    )
    from steering_adapter.measure.scored_runs import PromptScore, load_scores, score_prompts

_EXPORTS = {
    "repetition_rate": "answer_quality",
    "summarize_quality": "answer_quality",
    "EvalSet": "evaluation",
    "EvaluationReport": "evaluation_report",
    "evaluate": "evaluation",
    "EvaluationSettings": "evaluation_settings",
    "Judge": "judges",
    "Judgment": "judges",
    "LLMJudge": "judges",
    "OpenAIChatBackend": "judges",
    "PatternJudge": "judges",
    "TransformersJudgeBackend": "judges",
    "parse_judge_output": "judges",
    "attack_success": "jailbreaks",
    "wrap_prompts": "jailbreaks",
    "NextTokenKL": "likelihood",
    "next_token_kl": "likelihood",
    "perplexity": "likelihood",
    "PromptSet": "prompt_sets",
    "list_prompt_sets": "prompt_sets",
    "load_prompt_set": "prompt_sets",
    "split_prompts": "prompt_sets",
    "classify": "refusal_score",
    "refusal_confidence": "refusal_score",
    "summarize": "refusal_score",
    "RelevanceScorer": "relevance",
    "Answer": "sampling",
    "PromptSamples": "sampling",
    "Sampler": "sampling",
    "SamplingSettings": "sampling",
    "TransformersSampler": "sampling",
    "as_sampler": "sampling",
    "sample_answers": "sampling",
    "PromptScore": "scored_runs",
    "load_scores": "scored_runs",
    "score_prompts": "scored_runs",
}

__all__ = [
    "Answer",
    "as_sampler",
    "attack_success",
    "classify",
    "EvalSet",
    "evaluate",
    "EvaluationReport",
    "EvaluationSettings",
    "Judge",
    "Judgment",
    "list_prompt_sets",
    "LLMJudge",
    "load_prompt_set",
    "load_scores",
    "next_token_kl",
    "NextTokenKL",
    "OpenAIChatBackend",
    "parse_judge_output",
    "PatternJudge",
    "perplexity",
    "PromptSamples",
    "PromptScore",
    "PromptSet",
    "refusal_confidence",
    "RelevanceScorer",
    "repetition_rate",
    "sample_answers",
    "Sampler",
    "SamplingSettings",
    "score_prompts",
    "split_prompts",
    "summarize",
    "summarize_quality",
    "TransformersJudgeBackend",
    "TransformersSampler",
    "wrap_prompts",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
