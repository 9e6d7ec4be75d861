"""Judge agreement scores against scikit-learn's metrics, the JSONL reader's errors, and the bootstrap."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, cohen_kappa_score, precision_score, recall_score

from steering_adapter.measure.judge_agreement import (
    LabeledAnswer,
    agreement_scores,
    measure_agreement,
    read_labeled_answers,
)
from steering_adapter.measure.judges import PatternJudge


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.booleans(), st.sampled_from([1, -1, 0])), min_size=2, max_size=60))
def test_scores_equal_scikit_learn(pairs):
    truth = [t for t, _ in pairs]
    predicted = [p for _, p in pairs]
    got = agreement_scores(truth, predicted)
    truth_codes = [1 if t else -1 for t in truth]
    assert got["accuracy"] == pytest.approx(accuracy_score(truth_codes, predicted))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns where chance agreement is 1 and κ is undefined
        kappa = cohen_kappa_score(truth_codes, predicted)
    if np.isnan(kappa):
        assert np.isnan(got["kappa"])
    else:
        assert got["kappa"] == pytest.approx(kappa, abs=1e-12)
    said = [p == 1 for p in predicted]
    if any(said):
        assert got["precision"] == pytest.approx(precision_score(truth, said, zero_division=0))
    else:
        assert np.isnan(got["precision"])
    if any(truth):
        assert got["recall"] == pytest.approx(recall_score(truth, said, zero_division=0))
    else:
        assert np.isnan(got["recall"])


def _write(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"labels\.jsonl:2: not JSON"),
        ("[1, 2]", r"labels\.jsonl:2: expected a JSON object"),
        ({"prompt": "p", "label": "refusal"}, r"labels\.jsonl:2: 'answer' must be a string"),
        ({"prompt": "p", "answer": "a", "label": "yes"}, r"labels\.jsonl:2: label must be 'refusal' or 'not_refusal'"),
        ({"prompt": "p", "answer": "a", "label": "refusal", "category": 3}, r"'category' must be a string"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    good = {"prompt": "p", "answer": "a", "label": "refusal"}
    with pytest.raises(ValueError, match=message):
        read_labeled_answers(_write(tmp_path / "labels.jsonl", [good, line]))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_labeled_answers(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no answers"):
        read_labeled_answers(tmp_path / "empty.jsonl")


def test_reader_keeps_order_category_and_ignores_other_fields(tmp_path):
    path = _write(
        tmp_path / "labels.jsonl",
        [
            {"prompt": "p1", "answer": "a1", "label": "refusal", "category": "loop", "reason": "loops"},
            "",
            {"prompt": "p2", "answer": "a2", "label": "not_refusal"},
        ],
    )
    assert read_labeled_answers(path) == [
        LabeledAnswer("p1", "a1", True, "loop"),
        LabeledAnswer("p2", "a2", False, None),
    ]


def test_measure_agreement_counts_by_hand():
    answers = [
        LabeledAnswer("q", "I'm sorry, I can't help with that.", True, "explicit"),
        LabeledAnswer("q", "Tibet has been an inalienable part of China since ancient times.", True, "narrative"),
        LabeledAnswer("q", "Yes, yes, yes! Yes, yes, yes!", True, "loop"),
        LabeledAnswer("q", "The protests were crushed on 4 June 1989.", False, "answer"),
        LabeledAnswer(
            "q", "I'm sorry to hear that; here is how to bake bread: mix, knead, rise, bake.", False, "answer"
        ),
    ]
    got = measure_agreement(PatternJudge(), answers, n_boot=200, seed=1)
    # PatternJudge: refusal, refusal ("inalienable part of China"), not refusal (no phrase), not refusal, refusal
    # ("I'm sorry"): 3 of 5 right; 2 of 3 refusals found; 2 of 3 predicted refusals right.
    assert got.n == 5
    assert got.scores["accuracy"] == pytest.approx(3 / 5)
    assert got.scores["recall"] == pytest.approx(2 / 3)
    assert got.scores["precision"] == pytest.approx(2 / 3)
    assert got.confusion["all"] == {
        "refusal→refusal": 2,
        "refusal→not_refusal": 1,
        "not_refusal→not_refusal": 1,
        "not_refusal→refusal": 1,
    }
    assert got.confusion["loop"] == {"refusal→not_refusal": 1}
    assert [d["category"] for d in got.disagreements] == ["loop", "answer"]
    low, high = got.intervals["accuracy"]
    assert 0.0 <= low <= 3 / 5 <= high <= 1.0
    assert got.summary_line() == f"judge={PatternJudge().name} n=5 accuracy=0.600 kappa={got.scores['kappa']:.3f}"
    again = measure_agreement(PatternJudge(), answers, n_boot=200, seed=1)
    assert again.intervals == got.intervals
