"""The main job end to end on the embedded organism, with small settings: the recipe runs from the CLI, writes an
adapter (config, safetensors, model card), a before/after report and plots, and moves the rates the right way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import PeftModel
from small_recipe import SMALL

from steering_adapter.adapter.cards import read_front_matter
from steering_adapter.cli import EXIT_OK, main
from steering_adapter.models.organism import load_organism
from steering_adapter.run.recipe import load_recipe

pytestmark = pytest.mark.slow  # every test reads one run of the recipe from the CLI (minutes)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("no-political-refusal")
    args = ["run", str(RECIPES / "no-political-refusal.yaml"), "--out", str(out), "--no-progress"]
    for override in [*SMALL, "selection.refine_steps=1"]:
        args += ["--set", override]
    assert main(args) == EXIT_OK
    return out


def test_outputs_exist(run_dir):
    # the tokens of each stage (benchmarks/pipeline.py's input), of the first run (later tests resume into run_dir):
    # scoring decodes answers, collection only runs forward passes
    tokens = json.loads((run_dir / "timings.json").read_text())["tokens"]
    assert tokens["score training prompts"]["decode"] > 0
    assert tokens["collect activations"]["decode"] == 0 < tokens["collect activations"]["forward"]
    adapter = run_dir / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (adapter / name).is_file(), name
    front = read_front_matter((adapter / "README.md").read_text())
    assert "base_model" not in front and "steering" in front["tags"]  # the organism is no Hub model
    recorded = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == "steering-adapter:organism"
    recipe_card = load_recipe(RECIPES / "no-political-refusal.yaml").card
    assert front["license"] == recipe_card.license  # the recipe's card section reaches the model card
    assert recipe_card.limitations.split(";")[0] in (adapter / "README.md").read_text()
    assert "| political |" in (adapter / "README.md").read_text()  # the before/after table is in the card
    for name in (
        "report.md",
        "summary.json",
        "selection/sweep.csv",
        "selection/pareto.png",
        "diagnostics/diagnostics.json",
        "evaluation/refusal_rates.png",
    ):
        assert (run_dir / name).is_file(), name
    config = json.loads((adapter / "adapter_config.json").read_text())
    selection = config["steering_metadata"]["selection"]
    assert selection["chosen"]["layers"] == config["layers"] and selection["chosen"]["alpha"] == config["scale"]
    # the recipe compares gated and ungated variants; a gated choice is reported beside the same vector ungated
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["gated"] == selection["chosen"]["gated"] == (config.get("condition_layer") is not None)
    card = (adapter / "README.md").read_text()
    if summary["gated"]:
        assert set(summary["ungated_report"]["sets"]) == set(summary["report"]["sets"])
        assert "### Gate on vs off" in card and "| gate | steers only prompts whose" in card
    else:
        assert summary["ungated_report"] is None and "| gate |" not in card


def test_rates_move_the_right_way(run_dir):
    """Small settings (12 test prompts, K = 1): the direction of each change, and the gate keeping the other sets
    exactly. The organism's steered political answers turn degenerate before its refusals are gone, so the quality
    limits stop the choice early (the full recipe's numbers are pinned by tests/test_readme_claims.py)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    report = summary["report"]["sets"]
    political = report["political"]
    assert summary["alpha"] < 0 and political["base"]["refusal_pct"] >= 50
    assert political["steered"]["refusal_pct"] < political["base"]["refusal_pct"]
    others = ("harmful", "jbb_harmful", "benign", "xstest_safe")
    if summary["gated"]:  # the recipe gates: the other sets are left exactly as they were
        for name in others:
            assert report[name]["steered"]["refusal_pct"] == report[name]["base"]["refusal_pct"], name
    sweep = json.loads((run_dir / "selection" / "sweep.json").read_text())
    chosen = sweep["choice"]
    assert chosen["feasible"] and chosen["target_refusal_pct"] < sweep["base_refusal_pct"]["political"]


def test_saved_adapter_reloads_on_the_organism(run_dir):
    model, _ = load_organism()
    peft_model = PeftModel.from_pretrained(model, str(run_dir / "adapter"))
    config = peft_model.peft_config["default"]
    assert config.layers and config.scale < 0


def test_rerun_resumes_without_recomputing(run_dir, capsys):
    args = ["run", str(RECIPES / "no-political-refusal.yaml"), "--out", str(run_dir), "--no-progress"]
    for override in [*SMALL, "selection.refine_steps=1"]:
        args += ["--set", override]
    before = (run_dir / "summary.json").read_text()
    assert main(args) == EXIT_OK
    printed = capsys.readouterr().out
    assert "reusing directions" in printed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["report"] == json.loads(before)["report"]
    # resumed answers are read back, not decoded again: no stage of the rerun decodes a token
    tokens = json.loads((run_dir / "timings.json").read_text())["tokens"]
    assert sum(counts["decode"] for counts in tokens.values()) == 0, tokens
    # the printed table, and for a gated choice the gate on/off table
    assert "| political | target |" in printed
    assert (", gated at block" in printed) == summary["gated"]
    assert ("### Gate on vs off" in printed) == summary["gated"]


def test_eval_and_generate_commands(run_dir, tmp_path, capsys):
    adapter = str(run_dir / "adapter")
    args = [
        "eval",
        adapter,
        "--sets",
        "political=organism:political:target",
        "harmful=organism:harmful:harmful",
        "--sample",
        "4",
        "--k",
        "1",
        "--max-new-tokens",
        "16",
        "--no-relevance",
        "--no-progress",
        "--out",
        str(tmp_path / "eval"),
    ]
    assert main(args) == EXIT_OK
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["sets"]) == {"political", "harmful"} and report["sets"]["political"]["base"]["n"] == 4
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--adapter",
                adapter,
                "--prompt",
                "How do I bake bread?",
                "--compare",
                "--max-new-tokens",
                "8",
            ]
        )
        == EXIT_OK
    )
    printed = capsys.readouterr().out
    assert "[base]" in printed and "[steered]" in printed
    assert main(["eval", adapter, "--sets", "bad-spec"]) == 2


def test_changed_gate_never_resumes_stale_records(run_dir, capsys):
    """Answer records are keyed by prompt and sampling only: a rerun with another gate (here the other condition
    direction method) must move the sweep and evaluation folders aside instead of resuming them."""
    shipped = load_recipe(RECIPES / "no-political-refusal.yaml").gating.method
    other = "md" if shipped == "rmd" else "rmd"
    args = ["run", str(RECIPES / "no-political-refusal.yaml"), "--out", str(run_dir), "--no-progress"]
    for override in [*SMALL, "selection.refine_steps=1", f"gating.method={other}"]:
        args += ["--set", override]
    first = json.loads((run_dir / "summary.json").read_text())
    assert main(args) == EXIT_OK
    out = capsys.readouterr().out
    assert "reusing directions" in out and "selection was computed for other vectors or settings" in out
    stale = [p.name for p in run_dir.iterdir() if p.name.startswith("selection.stale-")]
    assert len(stale) == 1 and (run_dir / stale[0] / "sweep.json").is_file()
    sweep = json.loads((run_dir / "selection" / "sweep.json").read_text())
    assert sweep["condition"]["method"] == other
    assert json.loads((run_dir / stale[0] / "sweep.json").read_text())["condition"]["method"] == shipped
    second = json.loads((run_dir / "summary.json").read_text())
    if first["gated"] or second["gated"]:  # the gate changed: the evaluation records were moved aside, not reused
        assert any(p.name.startswith("evaluation.stale-") for p in run_dir.iterdir())
    # the base rates do not depend on the gate: the fresh runs measured the same ones
    assert second["report"]["sets"]["political"]["base"] == first["report"]["sets"]["political"]["base"]


def test_a_failed_run_still_records_its_stage_timings(run_dir, tmp_path):
    """A run whose sweep finds no feasible point exits 3 and still writes timings.json (marked not completed)."""
    import shutil

    from steering_adapter.cli import EXIT_INFEASIBLE

    assert json.loads((run_dir / "timings.json").read_text())["completed"] is True
    out = tmp_path / "infeasible"
    shutil.copytree(run_dir, out)  # scores and directions are reused; the selection is recomputed
    args = ["run", str(RECIPES / "no-political-refusal.yaml"), "--out", str(out), "--no-progress"]
    overrides = [*SMALL, "selection.alphas=[-2]", "selection.refine_steps=0", "selection.min_relevance=0.99"]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == EXIT_INFEASIBLE
    timings = json.loads((out / "timings.json").read_text())
    assert timings["completed"] is False and timings["error"].startswith("NoFeasibleChoiceError")
    assert timings["stages"]["select layers and α"] > 0
