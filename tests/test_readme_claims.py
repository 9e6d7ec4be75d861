"""What the README claims, reproduced: the organism recipe's numbers, the run folder holding every output the README
lists, and `examples/compose_adapters.py` run end to end.

The organism recipe runs once here exactly as the README's main job runs it (default settings, one thread); the
numbers are read from the README's "Measured on the organism" section, so editing either side without the other
fails this test. Pinned, from its first paragraph, table and KL line:

- the chosen blocks and gate (exactly) and α (within 2 % or 0.01); the condition's block and method (exactly) and
  the share of political and of other prompts it selects on the selection half (within δ, in points);
- every row of the table: n (exactly); refusal % before, after (gated) and with the same vector ungated (within the
  recipe's δ, 5 points); relevance before → after (within 0.01);
- the KL line: the number of neutral prompts (exactly); KL per token gated, at the first answer token (gated) and
  ungated (within 0.01).

Not pinned: the wall times (machine-dependent), the α grid's description, the judge and K (the recipe's, read by
the run), and the differences quoted after the table (they follow from the table).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # the README's main job, two smaller recipe runs and the composition example (minutes)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RECIPE = ROOT / "recipes" / "no-political-refusal.yaml"
COOKING_RECIPE = ROOT / "recipes" / "targeted-refusal-cooking.yaml"
DELTA = yaml.safe_load(RECIPE.read_text())["selection"]["delta"]
NUMBER = r"[−-]?\d+(?:\.\d+)?"


def _number(text: str) -> float:
    return float(text.replace("−", "-").replace("*", "").strip())


def _section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n#", start + len(heading))
    return README[start : end if end != -1 else None]


def _search(pattern: str, text: str) -> re.Match | None:
    """``re.search`` where each space of ``pattern`` matches any run of whitespace (the README wraps its lines)."""
    return re.search(pattern.replace(" ", r"\s+"), text)


def readme_headline() -> dict:
    """The organism section of the README: chosen blocks, α, gate (its block and selection-half rates), per-set rows
    (refusal % and relevance) and KL."""
    text = _section("### Measured on the organism")
    chose = re.search(rf"chose blocks ([\d, ]+), α = ({NUMBER}), \*\*(gated|ungated)\*\*", text)
    assert chose, "the README's organism section must say which blocks, α and gate the sweep chose"
    gate = _search(
        rf"on a (ridge|mean-difference) condition direction at block (\d+) \(selection half: ({NUMBER}) % of "
        rf"political prompts selected, ({NUMBER}) % of the others\)",
        text,
    )
    assert gate, "the README's organism section must say which condition the gate uses and what it selects"
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`.*", cells[0]) if len(cells) >= 7 else None
        if name:
            relevance = re.fullmatch(rf"({NUMBER}) → ({NUMBER})", cells[6])
            assert relevance, f"the README's {name.group(1)} row must end with 'relevance before → after'"
            rows[name.group(1)] = {
                "n": int(cells[2]),
                "before": _number(cells[3]),
                "gated": _number(cells[4]),
                "ungated": _number(cells[5]),
                "relevance": (_number(relevance.group(1)), _number(relevance.group(2))),
            }
    kl = _search(
        rf"KL\(base ‖ steered\) on (\d+) neutral prompts: ({NUMBER}) per token gated \(({NUMBER}) at the first "
        rf"answer token\), ({NUMBER}) ungated",
        text,
    )
    assert rows and kl, "the README's organism table and KL line must be parseable"
    return {
        "layers": [int(x) for x in chose.group(1).split(",")],
        "alpha": _number(chose.group(2)),
        "gated": chose.group(3) == "gated",
        "condition": {
            "method": {"ridge": "rmd", "mean-difference": "md"}[gate.group(1)],
            "layer": int(gate.group(2)),
            "selected_pct": _number(gate.group(3)),
            "others_pct": _number(gate.group(4)),
        },
        "rows": rows,
        "kl": {
            "n": int(kl.group(1)),
            "gated": _number(kl.group(2)),
            "gated_first_token": _number(kl.group(3)),
            "ungated": _number(kl.group(4)),
        },
    }


def _run(recipe: Path, out: Path, *settings: str) -> dict:
    command = [sys.executable, "-m", "steering_adapter.cli", "run", str(recipe), "--out", str(out)]
    for setting in settings:
        command += ["--set", setting]
    done = subprocess.run(
        command + ["--no-progress", "--threads", "1"], capture_output=True, text=True, timeout=1800, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("readme") / "no-political-refusal"
    return out, _run(RECIPE, out)


def test_headline_table_reproduced_within_delta(main_job):
    out, summary = main_job
    claimed = readme_headline()
    assert summary["layers"] == claimed["layers"]
    assert summary["gated"] is claimed["gated"]
    assert summary["alpha"] == pytest.approx(claimed["alpha"], rel=0.02, abs=0.01)
    report, ungated = summary["report"], summary["ungated_report"]
    # the gate: the condition recorded in the adapter, its rates on the selection half (fractions, in points)
    condition = json.loads((out / "adapter" / "adapter_config.json").read_text())["steering_metadata"]["condition"]
    assert (condition["method"], condition["layer"]) == (claimed["condition"]["method"], claimed["condition"]["layer"])
    assert abs(100 * condition["heldout_tpr"] - claimed["condition"]["selected_pct"]) <= DELTA, condition
    assert abs(100 * condition["heldout_fpr"] - claimed["condition"]["others_pct"]) <= DELTA, condition
    assert set(claimed["rows"]) == set(report["sets"]), "every evaluation set of the recipe is in the README table"
    for name, row in claimed["rows"].items():
        measured = report["sets"][name]
        assert measured["base"]["n"] == row["n"], name
        assert abs(measured["base"]["refusal_pct"] - row["before"]) <= DELTA, (name, measured["base"], row)
        assert abs(measured["steered"]["refusal_pct"] - row["gated"]) <= DELTA, (name, measured["steered"], row)
        off = ungated["sets"][name]["steered"]["refusal_pct"]
        assert abs(off - row["ungated"]) <= DELTA, (name, off, row)
        relevance = (measured["base"]["mean_relevance"], measured["steered"]["mean_relevance"])
        assert relevance == pytest.approx(row["relevance"], abs=0.01), (name, relevance, row)
    kl = report["kl"]
    assert kl["n_prompts"] == claimed["kl"]["n"]
    assert kl["mean_kl"] == pytest.approx(claimed["kl"]["gated"], abs=0.01)
    assert kl["mean_kl_last"] == pytest.approx(claimed["kl"]["gated_first_token"], abs=0.01)
    assert ungated["kl"]["mean_kl"] == pytest.approx(claimed["kl"]["ungated"], abs=0.01)


def test_the_gate_is_what_keeps_harmful_refusals(main_job):
    """The README's point: gated, harmful refusals stay within δ of base; ungated, the same vector loses more."""
    _, summary = main_job
    for name in ("harmful", "jbb_harmful"):
        base = summary["report"]["sets"][name]["base"]["refusal_pct"]
        assert summary["report"]["sets"][name]["steered"]["refusal_pct"] >= base - DELTA
    assert summary["report"]["sets"]["political"]["steered"]["refusal_pct"] < (
        summary["report"]["sets"]["political"]["base"]["refusal_pct"] - 20
    )


def test_every_listed_output_is_written(main_job):
    out, _ = main_job
    paragraph = README[README.index("The run writes `runs/no-political-refusal/`") :].split("\n\n")[0]
    listed = re.findall(r"`([\w.]+/?)`", paragraph)
    assert {"adapter/", "report.md", "summary.json", "diagnostics/", "selection/", "evaluation/"} <= set(listed)
    for name in listed:
        path = out / name.rstrip("/")
        if name.endswith("/"):
            assert path.is_dir() and any(path.iterdir()), name
        elif name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
            assert (out / "adapter" / name).is_file(), name
        else:
            assert path.is_file(), name
    assert list((out / "diagnostics").glob("*.png")) and list((out / "selection").glob("*.png"))
    assert (out / "timings.json").is_file() and (out / "selection" / "sweep.csv").is_file()
    # the answers' perplexity under the base model, which the README lists among the quality measures
    sets = json.loads((out / "summary.json").read_text())["report"]["sets"]
    assert all(row["steered"].get("base_perplexity") for row in sets.values())


SMALL = [
    "sampling.k=2",
    "sampling.max_new_tokens=24",
    "prompts.max_train_per_set=48",
    "prompts.max_eval_per_set=12",
    "selection.max_prompts_per_set=8",
    "selection.refine_steps=0",
]


def test_composition_example_runs_end_to_end(tmp_path):
    """`examples/compose_adapters.py` on two recipe adapters (runs made smaller than the README's for time)."""
    political = tmp_path / "political"
    cooking = tmp_path / "cooking"
    _run(RECIPE, political, *SMALL, "selection.alphas=[-2,-4]")
    _run(COOKING_RECIPE, cooking, *SMALL)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "compose_adapters.py"),
            "--no-political",
            str(political / "adapter"),
            "--no-cooking",
            str(cooking / "adapter"),
            "--out",
            str(tmp_path / "composition"),
            "--limit",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| composed |" in done.stdout
    result = json.loads((tmp_path / "composition" / "composition_report.json").read_text())
    rates = result["refusal_pct"]
    assert set(rates) == {"base", "no_political", "no_cooking", "composed"}
    # each part's effect survives the composition, as docs/results.md says of the full-size run
    assert rates["composed"]["political"] < rates["base"]["political"]
    assert rates["composed"]["cooking"] > rates["base"]["cooking"]
    assert len(result["interference"]) >= 1
