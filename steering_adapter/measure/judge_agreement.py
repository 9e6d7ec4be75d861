"""How well a judge agrees with human labels: accuracy, Cohen's κ, refusal precision / recall, bootstrap intervals.

A refusal rate is only as good as the judge behind it.
:func:`~steering_adapter.measure.judges.labeled_answers.read_labeled_answers` reads a JSONL file of answers labeled
by reading; :func:`measure_agreement` judges every answer and compares.

A judge's unparseable verdict (label ``0``) is its own predicted class: it agrees with neither human label, so it
lowers accuracy and κ, and is never a predicted refusal. κ is Cohen's, over the classes either side uses. The
intervals are percentile bootstrap intervals over answers (``n_boot`` resamples, seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from steering_adapter.measure.judges.base import REFUSAL, UNPARSEABLE, Judge
from steering_adapter.measure.judges.labeled_answers import LabeledAnswer, read_labeled_answers
from steering_adapter.measure.judges.learned import labeled_answers

__all__ = [
    "JudgeAgreement",
    "LabeledAnswer",
    "agreement_scores",
    "judge_agreement_summary",
    "measure_agreement",
    "read_labeled_answers",
]


def agreement_scores(truth: Sequence[bool], predicted: Sequence[int]) -> dict[str, float]:
    """Accuracy, Cohen's κ and refusal precision / recall of judge labels against human labels.

    Args:
        truth: ``[n]`` human labels, ``True`` = refusal.
        predicted: ``[n]`` judge labels: ``+1`` refusal, ``-1`` not refusal, ``0`` unparseable.

    Returns:
        ``{"accuracy", "kappa", "precision", "recall"}``; precision is ``nan`` when the judge predicts no refusal,
        recall ``nan`` when no answer is a refusal, κ ``nan`` when chance agreement is 1 (one class on both sides).
    """
    truth_codes = np.where(np.asarray(truth, dtype=bool), REFUSAL, -REFUSAL)
    predicted = np.asarray(predicted, dtype=int)
    if truth_codes.shape != predicted.shape or truth_codes.ndim != 1 or truth_codes.size == 0:
        raise ValueError(f"need two equal non-empty 1-D label lists, got {truth_codes.shape} and {predicted.shape}")
    classes = np.array([REFUSAL, -REFUSAL, UNPARSEABLE])
    observed = float(np.mean(truth_codes == predicted))
    chance = float(sum(np.mean(truth_codes == c) * np.mean(predicted == c) for c in classes))
    kappa = (observed - chance) / (1.0 - chance) if chance < 1.0 else float("nan")
    true_refusal, said_refusal = truth_codes == REFUSAL, predicted == REFUSAL
    hits = float(np.sum(true_refusal & said_refusal))
    precision = hits / said_refusal.sum() if said_refusal.any() else float("nan")
    recall = hits / true_refusal.sum() if true_refusal.any() else float("nan")
    return {"accuracy": observed, "kappa": kappa, "precision": precision, "recall": recall}


@dataclass
class JudgeAgreement:
    """A judge measured against human labels.

    Attributes:
        judge: the judge's name.
        n: answers judged.
        scores: ``{"accuracy", "kappa", "precision", "recall"}`` (see :func:`agreement_scores`).
        intervals: ``{score: [low, high]}``, percentile bootstrap intervals at ``confidence``.
        confidence: the intervals' coverage.
        confusion: ``{category: {"refusal→refusal": n, "refusal→not_refusal": n, …}}`` (human label → judge label,
            ``"unparseable"`` for the judge's label 0); the key ``"all"`` sums every category.
        disagreements: the answers the judge got wrong, as ``{"prompt", "answer", "label", "judged", "category",
            "rationale"}`` dicts.
    """

    judge: str
    n: int
    scores: dict[str, float]
    intervals: dict[str, list[float]]
    confidence: float
    confusion: dict[str, dict[str, int]]
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def summary_line(self) -> str:
        """``judge=<name> n=<N> accuracy=<a> kappa=<k>``, the line scripts read."""
        return f"judge={self.judge} n={self.n} accuracy={self.scores['accuracy']:.3f} kappa={self.scores['kappa']:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _judged_name(label: int) -> str:
    return {REFUSAL: "refusal", -REFUSAL: "not_refusal"}.get(label, "unparseable")


def measure_agreement(
    judge: Judge,
    answers: Sequence[LabeledAnswer],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> JudgeAgreement:
    """Judge every labeled answer and measure the agreement with the human labels.

    Args:
        judge: the judge (its :meth:`~steering_adapter.measure.judges.base.Judge.judge_many` is called once).
        answers: the labeled answers.
        n_boot: bootstrap resamples for the intervals (``0``: no intervals).
        confidence: the intervals' coverage.
        seed: the bootstrap's seed.

    Returns:
        The :class:`JudgeAgreement`.
    """
    if not answers:
        raise ValueError("no labeled answers to measure the judge on")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    judgments = judge.judge_many([(a.prompt, a.answer) for a in answers])
    truth = [a.refusal for a in answers]
    predicted = [j.label for j in judgments]
    scores = agreement_scores(truth, predicted)
    intervals: dict[str, list[float]] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        truth_array, predicted_array = np.asarray(truth), np.asarray(predicted)
        draws = {name: [] for name in scores}
        for _ in range(n_boot):
            index = rng.integers(0, len(answers), len(answers))
            for name, value in agreement_scores(truth_array[index], predicted_array[index]).items():
                draws[name].append(value)
        tail = 50.0 * (1.0 - confidence)
        for name, values in draws.items():
            finite = np.asarray(values)[np.isfinite(values)]
            bounds = np.percentile(finite, [tail, 100.0 - tail]) if finite.size else [np.nan, np.nan]
            intervals[name] = [float(bounds[0]), float(bounds[1])]
    confusion: dict[str, dict[str, int]] = {}
    disagreements = []
    for item, judgment in zip(answers, judgments, strict=True):
        cell = f"{'refusal' if item.refusal else 'not_refusal'}→{_judged_name(judgment.label)}"
        for category in ("all", item.category) if item.category else ("all",):
            row = confusion.setdefault(category, {})
            row[cell] = row.get(cell, 0) + 1
        if (judgment.label == REFUSAL) != item.refusal or judgment.label == UNPARSEABLE:
            disagreements.append(
                {
                    "prompt": item.prompt,
                    "answer": item.answer,
                    "label": "refusal" if item.refusal else "not_refusal",
                    "judged": _judged_name(judgment.label),
                    "category": item.category,
                    "rationale": judgment.rationale,
                }
            )
    return JudgeAgreement(judge.name, len(answers), scores, intervals, confidence, confusion, disagreements)


def judge_agreement_summary(judge: Judge) -> dict[str, Any]:
    """The judge's agreement with the package's labeled test answers, as a report records it.

    Returns:
        ``{"judge", "n", "accuracy", "kappa", "labels"}`` (``labels``: which labeled answers).
    """
    agreement = measure_agreement(judge, labeled_answers("test"), n_boot=0)
    return {
        "judge": agreement.judge,
        "n": agreement.n,
        "accuracy": agreement.scores["accuracy"],
        "kappa": agreement.scores["kappa"],
        "labels": "the package's labeled test split",
    }
