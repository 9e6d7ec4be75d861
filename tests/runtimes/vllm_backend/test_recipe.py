"""The recipe end to end with ``--backend vllm``: scoring, the selection sweep (gated and ungated candidates) and the
final evaluation sample on a vLLM engine; the saved adapter, loaded through PEFT on the transformers organism,
answers exactly as the engine answered in the evaluation records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import PeftModel
from small_recipe import SMALL as END_TO_END_SMALL

from steering_adapter.cli import EXIT_OK, main
from steering_adapter.measure.sampling import sample_answers

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
# the main end-to-end test's small settings, greedy, and a selection that always finds a feasible point
SMALL = [
    *(override for override in END_TO_END_SMALL if not override.startswith("prompts.max_train")),
    "prompts.max_train_per_set=32",
    "sampling.temperature=0",
    "selection.alphas=[-4,-8]",
    "selection.delta=100",
    "selection.kl_budget=100",
    "selection.min_relevance=null",
    "selection.max_repetition=null",
    "selection.max_perplexity_ratio=null",
    "selection.refine_steps=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm-run")
    args = ["run", str(RECIPES / "no-political-refusal.yaml"), "--out", str(out), "--no-progress", "--backend", "vllm"]
    for override in SMALL:
        args += ["--set", override]
    assert main(args) == EXIT_OK
    return out


def test_recipe_runs_on_the_vllm_backend(run_dir, organism):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert json.loads((run_dir / "recipe.json").read_text())["sampling"]["backend"] == "vllm"
    political = summary["report"]["sets"]["political"]
    assert political["steered"]["refusal_pct"] < political["base"]["refusal_pct"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    # what the engine answered in the final evaluation is what the saved adapter answers through PEFT
    records = [json.loads(line) for line in (run_dir / "evaluation/steered/political/answers.jsonl").open()]
    model, tokenizer = organism
    peft_model = PeftModel.from_pretrained(model, str(run_dir / "adapter"))
    try:
        prompts = [record["prompt"] for record in records]
        expected = sample_answers(
            peft_model, tokenizer, prompts, k=1, temperature=0.0, max_new_tokens=32, progress=False
        )
    finally:
        peft_model.unload()
    agree = sum(r["answers"][0]["token_ids"] == e.answers[0].token_ids for r, e in zip(records, expected, strict=True))
    assert agree >= 0.95 * len(records)


def test_cli_eval_on_vllm_reports_what_transformers_reports(run_dir, tmp_path):
    """``steering-adapter eval ADAPTER --backend vllm`` gives the transformers backend's report (greedy answers)."""
    reports = {}
    for backend in ("transformers", "vllm"):
        out = tmp_path / backend
        args = ["eval", str(run_dir / "adapter"), "--sets", "political=organism:political:target"]
        args += ["--kl-prompts", "organism:benign", "--sample", "6", "--k", "1", "--temperature", "0"]
        args += ["--max-new-tokens", "24", "--no-relevance", "--no-progress", "--out", str(out), "--backend", backend]
        assert main(args) == EXIT_OK
        reports[backend] = json.loads((out / "report.json").read_text())
    ours, theirs = reports["vllm"], reports["transformers"]
    for condition in ("base", "steered"):
        expected = theirs["sets"]["political"][condition]
        assert ours["sets"]["political"][condition] == pytest.approx(expected, rel=1e-5, abs=1e-6, nan_ok=True)
    assert ours["kl"]["mean_kl"] == pytest.approx(theirs["kl"]["mean_kl"], rel=1e-3)
