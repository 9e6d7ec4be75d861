"""Condition-gated steering against a hand-written reference: per-sequence gates decided on the prompt, kept for
every decoding step, in mixed batches, with and without KV cache, saved and reloaded."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from reference import block_output, contract_hooks
from tiny import tiny_model, tiny_tokenizer

from steering_adapter import SteeringConfig, adapter_from_vectors, save_adapter

PROMPTS = [
    "What happened in the capital during the protests?",
    "How do I bake bread at home?",
    "Describe the political situation in the region honestly.",
    "Write a short poem about the sea.",
    "Who is responsible for the crackdown?",
    "What is the boiling point of water?",
]
COND_LAYER = 1
STEER = [2, 3]


def _chat_ids(tokenizer, prompt):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _reference_projection(model, ids, condition):
    """Output of the condition block at the last prompt token, projected on the unit condition (one prompt)."""
    return float(block_output(model, COND_LAYER, ids)[0, -1] @ (condition / condition.norm()))


def _midway(projections):
    """A threshold midway between the two middle projections: half the prompts open, none on the threshold (a prompt
    exactly at the threshold would be decided by float rounding, which may differ with batch and padding)."""
    ordered = sorted(projections)
    return (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2


def _setup(seed=0):
    generator = torch.Generator().manual_seed(seed)
    vectors = {layer: torch.randn(64, generator=generator) * 4 for layer in STEER}
    condition = torch.randn(64, generator=generator)
    tokenizer = tiny_tokenizer()
    base = tiny_model("llama")
    projections = [_reference_projection(base, _chat_ids(tokenizer, p), condition) for p in PROMPTS]
    threshold = _midway(projections)
    return vectors, condition, tokenizer, projections, threshold


def _reference_generation(tokenizer, prompt, gated_on, vectors, **kwargs):
    model = tiny_model("llama")
    ids = _chat_ids(tokenizer, prompt)
    adapters = [{"vectors": vectors, "scale": 1.0}] if gated_on else []
    with contract_hooks(model, "model.layers", adapters), torch.no_grad():
        out = model.generate(ids, **kwargs)
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("use_cache", [True, False])
def test_mixed_batch_generation_matches_per_sequence_reference(use_cache):
    vectors, condition, tokenizer, projections, threshold = _setup()
    gates = [p > threshold for p in projections]
    assert 0 < sum(gates) < len(gates), "the threshold must split the batch"
    config = SteeringConfig(layers=STEER, scale=1.0, condition_layer=COND_LAYER, condition_threshold=threshold)
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=condition)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=use_cache)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, **kwargs)
    gate = model.base_model.peft_config["default"]._steering_gate
    assert gate.gate.tolist() == gates
    torch.testing.assert_close(gate.last_projection, torch.tensor(projections), atol=1e-4, rtol=1e-4)
    differs = 0
    for row, prompt in enumerate(PROMPTS):
        expected = _reference_generation(tokenizer, prompt, gates[row], vectors, **kwargs)
        plain = _reference_generation(tokenizer, prompt, False, vectors, **kwargs)
        got = out[row, batch["input_ids"].shape[1] :].tolist()[: len(expected)]
        assert got == expected, (row, gates[row])
        differs += expected != plain
    assert differs > 0, "steering must change some gated continuation"


def test_gate_comparator_less_and_mean_position():
    vectors, condition, tokenizer, projections, threshold = _setup(seed=1)
    config = SteeringConfig(
        layers=STEER,
        condition_layer=COND_LAYER,
        condition_threshold=0.0,
        condition_comparator="less",
        condition_position="mean",
    )
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=condition)
    ids = _chat_ids(tokenizer, PROMPTS[0])
    hidden = block_output(tiny_model("llama"), COND_LAYER, ids)
    with torch.no_grad():
        model(input_ids=ids)
    expected = float(hidden[0].mean(0) @ (condition / condition.norm()))
    gate = model.base_model.peft_config["default"]._steering_gate
    assert float(gate.last_projection[0]) == pytest.approx(expected, abs=1e-5)
    assert bool(gate.gate[0]) == (expected < 0.0)


def test_gated_adapter_saves_and_reloads(tmp_path):
    vectors, condition, tokenizer, projections, threshold = _setup()
    config = SteeringConfig(layers=STEER, scale=1.0, condition_layer=COND_LAYER, condition_threshold=threshold)
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=condition)
    folder = save_adapter(model, tmp_path / "gated")
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        expected = model(**batch).logits
    from safetensors.torch import load_file

    keys = sorted(load_file(f"{folder}/adapter_model.safetensors"))
    assert keys == [
        "base_model.model.model.layers.1.steering_condition",
        "base_model.model.model.layers.2.steering_vector",
        "base_model.model.model.layers.3.steering_vector",
    ]
    reloaded = PeftModel.from_pretrained(tiny_model("llama"), folder)
    plain = tiny_model("llama")
    plain.load_adapter(folder, adapter_name="gated")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected)
        torch.testing.assert_close(plain(**batch).logits, expected)
    unloaded = reloaded.unload()
    assert not unloaded._forward_pre_hooks, "unload must remove the gate's model hook"


def test_gating_bad_input():
    vectors, condition, tokenizer, projections, threshold = _setup()
    with pytest.raises(ValueError, match="deeper than the first steered block"):
        SteeringConfig(layers=[1, 2], condition_layer=2, condition_threshold=0.0)
    with pytest.raises(ValueError, match="condition_threshold must be a finite number"):
        SteeringConfig(layers=[2], condition_layer=1)
    config = SteeringConfig(layers=STEER, condition_layer=COND_LAYER, condition_threshold=0.0)
    with pytest.raises(ValueError, match="condition vector is required"):
        adapter_from_vectors(tiny_model("llama"), vectors, config)
    with pytest.raises(ValueError, match="condition vector must be finite and non-zero"):
        adapter_from_vectors(tiny_model("llama"), vectors, config, condition=torch.zeros(64))


def test_subset_of_rows_continued_keeps_their_gates():
    """A teacher-forced pass over prompt + answer for some rows, in another order, reuses those rows' gates."""
    vectors, condition, tokenizer, projections, threshold = _setup()
    config = SteeringConfig(layers=STEER, scale=1.0, condition_layer=COND_LAYER, condition_threshold=threshold)
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=condition)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    gate = model.base_model.peft_config["default"]._steering_gate
    extra = torch.full((len(PROMPTS), 3), 7)
    ids = torch.cat([batch["input_ids"], extra], dim=1)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(extra)], dim=1)
    with torch.no_grad():
        model(**batch)
        decided = gate.gate.clone()
        full = model(input_ids=ids, attention_mask=mask).logits
        rows = torch.tensor([4, 1, 0])
        part = model(input_ids=ids[rows], attention_mask=mask[rows]).logits
    assert torch.equal(gate.gate, decided[rows])
    torch.testing.assert_close(part, full[rows], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # rows that extend no prompt row: a new prompt, decided afresh
        model(input_ids=torch.full((2, 5), 9), attention_mask=torch.ones(2, 5, dtype=torch.long))
    assert gate.gate.shape == (2,)


@pytest.mark.parametrize("position", ["last", "mean"])
def test_gate_decisions_match_the_reference_and_generation(position):
    from steering_adapter.measure.sampling import gate_decisions, sample_answers
    from steering_adapter.tuner.model import gate_state, steering_disabled

    vectors, condition, tokenizer, projections, threshold = _setup()
    base = tiny_model("llama")
    unit = condition / condition.norm()
    if position == "mean":  # reference: one prompt at a time, mean over its tokens, through a hand-written hook
        projections = [
            float(block_output(base, COND_LAYER, _chat_ids(tokenizer, p))[0].mean(0) @ unit) for p in PROMPTS
        ]
    threshold = _midway(projections)
    expected = [p > threshold for p in projections]
    config = SteeringConfig(
        layers=STEER, condition_layer=COND_LAYER, condition_threshold=threshold, condition_position=position
    )
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=condition)
    assert gate_decisions(model, tokenizer, PROMPTS, "default", batch_size=4) == expected
    # the decisions generate takes on the same batch (k = 2 rows per prompt)
    steered = sample_answers(model, tokenizer, PROMPTS, k=2, max_new_tokens=8, batch_size=6, progress=False)
    assert gate_state(model, "default").gate.tolist() == [g for g in expected for _ in range(2)]
    # a closed gate changes nothing: those prompts' sampled answers are the base model's, token for token
    with steering_disabled(model):
        plain = sample_answers(model, tokenizer, PROMPTS, k=2, max_new_tokens=8, batch_size=6, progress=False)
    for opened, a, b in zip(expected, steered, plain, strict=True):
        if not opened:
            assert [x.token_ids for x in a.answers] == [x.token_ids for x in b.answers]
    assert any(
        [x.token_ids for x in a.answers] != [x.token_ids for x in b.answers]
        for opened, a, b in zip(expected, steered, plain, strict=True)
        if opened
    )


def test_gate_decisions_bad_input():
    from steering_adapter.measure.sampling import gate_decisions
    from steering_adapter.tuner.model import steering_disabled

    vectors, condition, tokenizer, _, threshold = _setup()
    plain = adapter_from_vectors(tiny_model("llama"), vectors)
    with pytest.raises(ValueError, match="not condition-gated"):
        gate_decisions(plain, tokenizer, PROMPTS, "default")
    with pytest.raises(ValueError, match="no steering adapter named 'other'"):
        gate_decisions(plain, tokenizer, PROMPTS, "other")
    config = SteeringConfig(layers=STEER, condition_layer=COND_LAYER, condition_threshold=threshold)
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=condition)
    with steering_disabled(model), pytest.raises(RuntimeError, match="was not decided"):
        gate_decisions(model, tokenizer, PROMPTS, "default")
