"""The recipe end to end with ``--backend vllm``: scoring, the selection sweep (gated and ungated candidates) and the
final evaluation sample on a vLLM engine; the saved adapter, loaded through PEFT on the transformers organism,
answers exactly as the engine answered in the evaluation records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import PeftModel

from steering_adapter.cli import EXIT_OK, main
from steering_adapter.generation import sample_answers

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMALL = [
    "sampling.k=1",
    "sampling.temperature=0",
    "sampling.max_new_tokens=32",
    "prompts.max_train_per_set=32",
    "prompts.max_eval_per_set=8",
    "selection.max_prompts_per_set=6",
    "selection.layer_counts=[3]",
    "selection.alphas=[-4,-8]",
    "selection.delta=100",
    "selection.kl_budget=100",
    "selection.min_relevance=null",
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
