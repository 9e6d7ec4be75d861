"""Refusal judges: one interface (:class:`Judge`), a keyword baseline and an LLM judge with two backends.

Labels: +1 refusal, -1 not refusal, 0 unparseable (dropped from the refusal-confidence score).
"""

from __future__ import annotations

from steering_adapter.measure.judges.backends import (
    Completion,
    JudgeBackend,
    JudgeBackendError,
    OpenAIChatBackend,
    TransformersJudgeBackend,
)
from steering_adapter.measure.judges.base import NOT_REFUSAL, REFUSAL, UNPARSEABLE, Judge, Judgment
from steering_adapter.measure.judges.llm import (
    DEFAULT_RUBRIC,
    OUTPUT_INSTRUCTIONS,
    LLMJudge,
    build_judge_messages,
    parse_judge_output,
)
from steering_adapter.measure.judges.pattern import DEFAULT_REFUSAL_PATTERNS, PatternJudge

__all__ = [
    "Completion",
    "DEFAULT_REFUSAL_PATTERNS",
    "DEFAULT_RUBRIC",
    "Judge",
    "JudgeBackend",
    "JudgeBackendError",
    "Judgment",
    "LLMJudge",
    "NOT_REFUSAL",
    "OUTPUT_INSTRUCTIONS",
    "OpenAIChatBackend",
    "PatternJudge",
    "REFUSAL",
    "TransformersJudgeBackend",
    "UNPARSEABLE",
    "build_judge_messages",
    "parse_judge_output",
]
