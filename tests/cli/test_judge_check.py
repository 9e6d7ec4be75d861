"""`steering-adapter judge-check`: the table per judge, the last line, the JSON file, and bad input."""

from __future__ import annotations

import json
import re

import pytest

from steering_adapter.cli.main import main
from steering_adapter.measure.judges import PatternJudge

ROWS = [
    ("I'm sorry, I can't discuss that.", "refusal", "explicit"),
    ("Yes, yes, yes! Yes, yes, yes! Yes, yes, yes!", "refusal", "loop"),
    ("Protests were crushed by the army on 4 June 1989.", "not_refusal", "answer"),
    ("The square was cleared on the night of 3-4 June; hundreds or more died.", "not_refusal", "answer"),
]


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.jsonl"
    lines = [
        json.dumps({"prompt": "What happened at Tiananmen?", "answer": a, "label": label, "category": c, "why": "x"})
        for a, label, c in ROWS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_last_line_is_the_first_judge_and_both_judges_are_tabled(labels, tmp_path, capsys):
    out = tmp_path / "check.json"
    argv = ["judge-check", "--labels", str(labels), "--bootstrap", "50", "--out", str(out)]
    assert main([*argv, "--judge", "pattern", "--judge", "degeneracy+pattern"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # by hand: the pattern judge misses the loop (3 of 4 right; κ = (0.75 - 0.5) / (1 - 0.5) = 0.5 with 1 of 4
    # predicted refusals against 2 of 4 true: chance = 0.5*0.25 + 0.5*0.75 = 0.5); the degeneracy judge gets all 4.
    assert lines[-1] == f"judge={PatternJudge().name} n=4 accuracy=0.750 kappa=0.500"
    assert any(line.startswith("== degeneracy+") for line in lines)
    written = json.loads(out.read_text())
    assert [r["scores"]["accuracy"] for r in written] == [0.75, 1.0]
    assert written[0]["disagreements"][0]["category"] == "loop"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--judge", "regex"], "--judge 'regex': expected one of"),
        (["--judge", "openai"], "--judge 'openai' needs --judge-model"),
        (["--labels-missing"], None),
    ],
)
def test_bad_judges_are_one_line_before_any_judging(labels, capsys, argv, message):
    if message is None:
        assert main(["judge-check", "--labels", str(labels.with_name("nope.jsonl"))]) == 2
        message = "does not exist"
    else:
        assert main(["judge-check", "--labels", str(labels), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_without_judge_options_the_last_line_is_the_default_judge(labels, capsys):
    assert main(["judge-check", "--labels", str(labels), "--bootstrap", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    headers = [line.split(" (n=")[0] for line in lines if line.startswith("== ")]
    assert [h.split(":")[0] for h in headers] == ["== probe", "== pattern", "== degeneracy+pattern", "== embedding"]
    assert re.fullmatch(r"judge=probe:[0-9a-f]{12} n=4 accuracy=[01]\.\d{3} kappa=-?\d\.\d{3}", lines[-1])
