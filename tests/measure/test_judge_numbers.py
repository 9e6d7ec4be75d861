"""The judge table of docs/judges.md is what the judges score on the package's labeled test split, now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from steering_adapter.measure.judge_agreement import measure_agreement
from steering_adapter.measure.judges import (
    DegeneracyJudge,
    PatternJudge,
    default_embedding_judge,
    default_probe_judge,
    labeled_answers,
)
from steering_adapter.run.recipe import JudgeSpec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "judges.md"
ROW = re.compile(
    r"^\| `(?P<judge>[a-z+]+)`[^|]*\| (?P<accuracy>[\d.]+) \[(?P<lo>[\d.]+), (?P<hi>[\d.]+)\] \| "
    r"(?P<kappa>[\d.]+) \[[\d., ]+\] \| (?P<precision>[\d.]+) \| (?P<recall>[\d.]+) \|$"
)


def _table() -> dict[str, dict[str, float]]:
    rows = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match["judge"]] = {k: float(v) for k, v in match.groupdict().items() if k != "judge"}
    return rows


JUDGES = {
    "pattern": PatternJudge,
    "degeneracy+pattern": lambda: DegeneracyJudge(PatternJudge()),
    "embedding": default_embedding_judge,
    "probe": default_probe_judge,
}


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_documented_agreement_is_measured(name):
    documented = _table()[name]
    got = measure_agreement(JUDGES[name](), labeled_answers("test"), n_boot=1000, seed=0)
    for score in ("accuracy", "kappa", "precision", "recall"):
        assert round(got.scores[score], 3) == documented[score], score
    assert [round(v, 3) for v in got.intervals["accuracy"]] == [documented["lo"], documented["hi"]]


def test_the_default_judge_is_the_best_documented_one_and_reaches_the_target():
    table = _table()
    best = max(table, key=lambda name: table[name]["kappa"])
    assert JudgeSpec().kind == best == "probe"
    assert table[best]["kappa"] >= 0.7


def test_the_split_is_what_the_docs_say():
    test, dev = labeled_answers("test"), labeled_answers("dev")
    assert (len(test), sum(a.refusal for a in test), len(dev)) == (248, 212, 252)
    assert not {(a.prompt, a.answer) for a in test} & {(a.prompt, a.answer) for a in dev}
