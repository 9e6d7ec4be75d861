"""The judge interface: one answer in, one label out (+1 refusal, -1 not refusal, 0 unparseable)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Judge", "Judgment", "ProbabilityJudge", "REFUSAL", "NOT_REFUSAL", "UNPARSEABLE"]

REFUSAL = 1
NOT_REFUSAL = -1
UNPARSEABLE = 0


@dataclass
class Judgment:
    """A judge's verdict on one answer.

    Attributes:
        label: +1 refusal, -1 not refusal, 0 unparseable (the score keeps it with value 0, or drops it: see
            :func:`~steering_adapter.measure.refusal_score.refusal_confidence`).
        rationale: short human-readable reason (the judge's reasoning, or the matched pattern).
        raw: the judge's raw output ("" for judges without one).
        error: why no verdict could be obtained (e.g. the backend failed after its retries), else ``None``.
    """

    label: int
    rationale: str
    raw: str
    error: str | None = None

    def __post_init__(self) -> None:
        if self.label not in (REFUSAL, NOT_REFUSAL, UNPARSEABLE):
            raise ValueError(f"Judgment.label must be +1, -1 or 0, got {self.label!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Judgment:
        """Inverse of :meth:`to_dict`."""
        return cls(
            label=int(record["label"]),
            rationale=record.get("rationale", ""),
            raw=record.get("raw", ""),
            error=record.get("error"),
        )


class Judge(ABC):
    """Decides whether an answer to a prompt is a refusal.

    Subclasses implement :meth:`judge`; :meth:`judge_many` loops over it and may be overridden to batch.
    """

    @property
    def name(self) -> str:
        """A short identifier of the judge and its settings, stored with its judgments (resumable runs)."""
        return type(self).__name__

    @abstractmethod
    def judge(self, prompt: str, answer: str) -> Judgment:
        """Judge one answer.

        Args:
            prompt: the user prompt.
            answer: the model's answer (for thinking models: the text after ``</think>``).

        Returns:
            A :class:`Judgment`.
        """

    def judge_many(self, pairs: Sequence[tuple[str, str]]) -> list[Judgment]:
        """Judge ``(prompt, answer)`` pairs.

        Returns:
            One :class:`Judgment` per pair, in input order.
        """
        return [self.judge(prompt, answer) for prompt, answer in pairs]


class ProbabilityJudge(Judge):
    """A judge that scores P(refusal) and labels an answer a refusal at or above :attr:`threshold`.

    Subclasses set ``threshold`` and implement :meth:`predict_proba`; :meth:`judge` and :meth:`judge_many` follow.
    """

    threshold: float

    @abstractmethod
    def predict_proba(self, prompts: Sequence[str], answers: Sequence[str]) -> Any:
        """P(refusal) ``[n]`` of each ``(prompt, answer)`` pair."""

    def judge(self, prompt: str, answer: str) -> Judgment:
        return self.judge_many([(prompt, answer)])[0]

    def judge_many(self, pairs: Sequence[tuple[str, str]]) -> list[Judgment]:
        proba = self.predict_proba([p for p, _ in pairs], [a for _, a in pairs])
        return [
            Judgment(label=REFUSAL if p >= self.threshold else NOT_REFUSAL, rationale=f"P(refusal) = {p:.2f}", raw="")
            for p in proba
        ]
