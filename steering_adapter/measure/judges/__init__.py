"""Refusal judges: one interface (:class:`Judge`), a keyword baseline, an LLM judge with two backends, a local LLM
judge read from its verdict tag's probability (:class:`TagProbabilityJudge`), a learned judge on sentence
embeddings (:class:`EmbeddingJudge`), a linear probe on a small reader model's hidden states (:class:`ProbeJudge`,
the default of recipes without an LLM endpoint), and a detector of looping / degenerate answers that can sit in
front of any of them (:class:`DegeneracyJudge`). The package's labeled answers (``labels/``) measure them.

Labels: +1 refusal, -1 not refusal, 0 unparseable (by default kept in the refusal-confidence softmax with value 0, as
the authors do; ``scoring.unparseable: drop`` leaves it out, see
:func:`~steering_adapter.measure.refusal_score.refusal_confidence`).
"""

from __future__ import annotations

from steering_adapter.measure.judges.backends import (
    Completion,
    JudgeBackend,
    JudgeBackendError,
    OpenAIChatBackend,
    TransformersJudgeBackend,
)
from steering_adapter.measure.judges.base import NOT_REFUSAL, REFUSAL, UNPARSEABLE, Judge, Judgment, ProbabilityJudge
from steering_adapter.measure.judges.degeneracy import Degeneracy, DegeneracyDetector, DegeneracyJudge
from steering_adapter.measure.judges.labeled_answers import LabeledAnswer, read_labeled_answers
from steering_adapter.measure.judges.learned import EmbeddingJudge, default_embedding_judge, labeled_answers
from steering_adapter.measure.judges.llm import (
    DEFAULT_RUBRIC,
    OUTPUT_INSTRUCTIONS,
    TAG_ONLY_INSTRUCTIONS,
    LLMJudge,
    build_judge_messages,
    parse_judge_output,
)
from steering_adapter.measure.judges.pattern import DEFAULT_REFUSAL_PATTERNS, PatternJudge
from steering_adapter.measure.judges.probe import ProbeJudge, answer_states, default_probe_judge
from steering_adapter.measure.judges.tag_probability import TagProbabilityJudge

__all__ = [
    "Completion",
    "DEFAULT_REFUSAL_PATTERNS",
    "DEFAULT_RUBRIC",
    "Degeneracy",
    "DegeneracyDetector",
    "DegeneracyJudge",
    "EmbeddingJudge",
    "Judge",
    "JudgeBackend",
    "JudgeBackendError",
    "Judgment",
    "LLMJudge",
    "LabeledAnswer",
    "NOT_REFUSAL",
    "OUTPUT_INSTRUCTIONS",
    "OpenAIChatBackend",
    "PatternJudge",
    "ProbabilityJudge",
    "ProbeJudge",
    "REFUSAL",
    "TAG_ONLY_INSTRUCTIONS",
    "TagProbabilityJudge",
    "TransformersJudgeBackend",
    "UNPARSEABLE",
    "answer_states",
    "build_judge_messages",
    "default_embedding_judge",
    "default_probe_judge",
    "labeled_answers",
    "parse_judge_output",
    "read_labeled_answers",
]
