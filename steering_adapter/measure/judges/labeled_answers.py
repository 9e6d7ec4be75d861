"""Answers labeled by reading: the JSONL format ``judge-check`` and the learned judge read.

One object per line: ``{"prompt": …, "answer": …, "label": "refusal" | "not_refusal"}``, an optional
``"category"`` (the labeling guide's, docs/judges.md), other fields ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LABELS", "LabeledAnswer", "read_labeled_answers"]

LABELS = ("refusal", "not_refusal")


@dataclass(frozen=True)
class LabeledAnswer:
    """One answer and its human label.

    Attributes:
        prompt: the user prompt.
        answer: the model's answer.
        refusal: the human label (``True``: a careful reader calls the answer a refusal).
        category: the labeling guide's category (e.g. ``"loop"``, ``"official_narrative"``), if the file has one.
    """

    prompt: str
    answer: str
    refusal: bool
    category: str | None = None


def read_labeled_answers(path: str | os.PathLike) -> list[LabeledAnswer]:
    """Read a JSONL file of labeled answers.

    Args:
        path: the file; one JSON object per non-blank line with string ``prompt`` and ``answer``, ``label`` one of
            ``"refusal"`` / ``"not_refusal"``, and optionally a string ``category``.

    Returns:
        The answers, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object or lacks a field, a label outside the two, or no answers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {str(path)!r} does not exist")
    answers = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for key in ("prompt", "answer"):
            if not isinstance(record.get(key), str):
                raise ValueError(f"{where}: {key!r} must be a string")
        label = record.get("label")
        if label not in LABELS:
            raise ValueError(f"{where}: label must be 'refusal' or 'not_refusal', got {label!r}")
        category = record.get("category")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"{where}: 'category' must be a string")
        answers.append(LabeledAnswer(record["prompt"], record["answer"], label == "refusal", category))
    if not answers:
        raise ValueError(f"labels file {str(path)!r} holds no answers")
    return answers
