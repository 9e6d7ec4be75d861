"""evaluate and the selection sweep on the vLLM backend give the transformers backend's numbers (same prompts,
greedy answers, same judge): refusal rates per set and point, KL, perplexity, and the choice."""

from __future__ import annotations

import pytest
from conftest import COND_LAYER
from test_steering import _projections

from steering_adapter.directions.conditions import ConditionFit
from steering_adapter.measure.evaluation import EvalSet
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judges import PatternJudge
from steering_adapter.measure.likelihood import next_token_kl, perplexity
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.models.organism.data import load_examples
from steering_adapter.run.selection import SelectionObjective, SweepSettings, sweep_layers_and_scale
from steering_adapter.tuner.model import steering_disabled

GREEDY = SamplingSettings(k=1, temperature=0.0, max_new_tokens=32)


@pytest.fixture(scope="module")
def sets():
    examples = [e for e in load_examples() if e.split == "heldout"]
    political = [e.prompt for e in examples if e.category == "political"][:8]
    benign = [e.prompt for e in examples if e.category == "benign"][:8]
    return [EvalSet("political", political, "target"), EvalSet("benign", benign, "benign")]


def test_sweep_on_vllm_matches_the_transformers_sweep(engine, organism, vectors, sets, tmp_path):
    model, tokenizer = organism
    directions = vectors["add"]
    prompts = [p for s in sets for p in s.prompts]
    condition_vector = vectors["condition"][COND_LAYER]
    # midway between the two middle projections: a prompt exactly at the threshold (the median) is decided by
    # rounding, which differs with the batch a prompt is in (and the transformers sweep batches only open prompts)
    ordered = sorted(_projections(organism, prompts, condition_vector, "last"))
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    condition = ConditionFit(layer=COND_LAYER, direction=condition_vector, threshold=threshold)
    common = dict(
        ranking=[3, 2],
        sets=sets,
        judge=PatternJudge(),
        settings=SweepSettings(layer_counts=[1, 2], alphas=[-2.0, 3.0], objective=SelectionObjective(kl_budget=10.0)),
        evaluation=EvaluationSettings(kl_prompts=prompts[:4], progress=False),
        sampling=GREEDY,
        condition=condition,
    )
    engine.set_adapters([])
    reference = sweep_layers_and_scale(model, tokenizer, directions, out_dir=tmp_path / "tf", **common)
    got = sweep_layers_and_scale(engine, engine.tokenizer, directions, out_dir=tmp_path / "vllm", **common)
    assert got.base_refusal_pct == reference.base_refusal_pct
    assert [p.label for p in got.points] == [p.label for p in reference.points]
    assert any(p.gated for p in got.points)
    for ours, theirs in zip(got.points, reference.points, strict=True):
        assert ours.refusal_pct == theirs.refusal_pct, ours.label
        assert ours.kl == pytest.approx(theirs.kl, abs=1e-4), ours.label
    assert len({tuple(p.refusal_pct.values()) for p in got.points}) > 1, "the sweep must move the refusal rates"
    assert (got.choice.label if got.choice else None) == (reference.choice.label if reference.choice else None)
    assert engine.attached() == []  # the candidates are gone


def test_kl_and_perplexity_match_transformers(engine, organism, adapter_dirs, vectors, sets):
    from peft import PeftModel

    model, tokenizer = organism
    prompts = sets[0].prompts[:4] + sets[1].prompts[:4]
    texts = ["The cat sat on the mat and looked at the door.", "Beijing is the capital of China."]
    engine.set_adapters([str(adapter_dirs["add"])])
    peft_model = PeftModel.from_pretrained(model, str(adapter_dirs["add"]))
    try:
        expected = next_token_kl(peft_model, tokenizer, prompts, progress=False)
        got = engine.next_token_kl(prompts, progress=False)
        assert got["positions"] == expected["positions"]
        assert got["mean_kl"] == pytest.approx(expected["mean_kl"], rel=1e-4, abs=1e-6)
        assert got["mean_kl_last"] == pytest.approx(expected["mean_kl_last"], rel=1e-4, abs=1e-6)
        assert expected["mean_kl"] > 0.01
        assert engine.perplexity(texts, progress=False) == pytest.approx(
            perplexity(peft_model, tokenizer, texts, progress=False), rel=1e-4
        )
        with engine.steering_disabled(), steering_disabled(peft_model):
            assert engine.perplexity(texts, progress=False) == pytest.approx(
                perplexity(peft_model, tokenizer, texts, progress=False), rel=1e-4
            )
    finally:
        peft_model.unload()
