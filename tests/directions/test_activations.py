"""Activation collection (positions, padding, references), streaming statistics, merge and storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS, tiny_model, tiny_tokenizer

from steering_adapter.directions.collection import ActivationCollector, collect_activations
from steering_adapter.directions.collection_result import CollectionResult
from steering_adapter.directions.estimators import RidgeMeanDifference, WeightedRidgeMeanDifference
from steering_adapter.directions.labels import assign_labels
from steering_adapter.directions.statistics import ActivationStatistics
from steering_adapter.measure.sampling.prompt_encoding import format_prompts

PROMPTS = [
    *HARMLESS_PROMPTS,
    *SENSITIVE_PROMPTS,
    "Hi",
    "A much longer prompt that goes on and on about many different things, to force a lot of padding.",
]
SCORES = np.array([-0.9, -0.6, -0.3, -0.8, 0.0, -0.5, 0.9, 0.7, 0.05, 1.0, 0.4, 0.8, -0.2, 0.6])
LABELS = SCORES > 0


pytestmark = pytest.mark.usefixtures("single_thread")


def reference_block_outputs(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output for one unpadded prompt, read with our own forward hooks: list of [T, d]."""
    outputs = []
    handles = [
        block.register_forward_hook(lambda m, a, out: outputs.append((out[0] if isinstance(out, tuple) else out)[0]))
        for block in (model.transformer.h if hasattr(model, "transformer") else model.model.layers)
    ]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def chat_ids(tokenizer, prompt: str, system: str | None = None) -> torch.Tensor:
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    return encoded["input_ids"]


# ----------------------------------------------------------------------------------------- positions, padding


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("position", ["last", "mean"])
def test_batched_equals_one_at_a_time(tokenizer, arch, padding_side, position):
    model = tiny_model(arch)
    common = dict(position=position, padding_side=padding_side, progress=False)
    batched = ActivationCollector(model, tokenizer, batch_size=5, **common).collect(PROMPTS).activations
    single = ActivationCollector(model, tokenizer, batch_size=1, **common).collect(PROMPTS).activations
    assert batched.shape == (len(PROMPTS), 4, 64)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    assert batched.abs().amax() > 1e-3  # not trivially zero


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_last_and_mean_match_hand_written_reference(tokenizer, arch):
    model = tiny_model(arch)
    last = collect_activations(model, tokenizer, PROMPTS, batch_size=4, progress=False).activations
    mean = collect_activations(
        model, tokenizer, PROMPTS, position="mean", batch_size=4, padding_side="right", progress=False
    ).activations
    for i, prompt in enumerate(PROMPTS):
        ids = chat_ids(tokenizer, prompt)
        blocks = reference_block_outputs(model, ids)
        for layer, output in enumerate(blocks):
            torch.testing.assert_close(last[i, layer], output[-1], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(mean[i, layer], output.mean(0), rtol=1e-4, atol=1e-5)
        # transformers' hidden_states[i + 1] is block i's output (the final one may carry the final norm)
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in range(len(blocks) - 1):
            torch.testing.assert_close(last[i, layer], hidden[layer + 1][0, -1], rtol=1e-4, atol=1e-5)


ANSWERS = ["Sure, here it is.", "No.", "I can't help with that request, sorry about it."]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_answer_position_matches_hand_written_reference(tokenizer, arch, padding_side):
    """``position="answer"``: the mean of each block's output over the answer's tokens, teacher-forced after the
    formatted prompt (a prompt may repeat with another answer; answers as token ids or text)."""
    model = tiny_model(arch)
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[6], PROMPTS[-1]]
    answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in [*ANSWERS, ANSWERS[0]]]
    given = [answer_ids[0], ANSWERS[1], answer_ids[2], answer_ids[3]]  # ids and text mixed
    collected = collect_activations(
        model,
        tokenizer,
        prompts,
        position="answer",
        answers=given,
        batch_size=3,
        padding_side=padding_side,
        progress=False,
    ).activations
    for i, prompt in enumerate(prompts):
        ids = chat_ids(tokenizer, prompt)
        blocks = reference_block_outputs(model, torch.cat([ids, torch.tensor([answer_ids[i]])], dim=1))
        for layer, output in enumerate(blocks):
            torch.testing.assert_close(collected[i, layer], output[ids.shape[1] :].mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(collected[0], collected[1])  # same prompt, other answer


def test_answer_position_errors(tokenizer, llama):
    with pytest.raises(ValueError, match="position 'answer' pools over answer tokens: pass answers"):
        collect_activations(llama, tokenizer, PROMPTS[:2], position="answer", progress=False)
    with pytest.raises(ValueError, match="one answer per prompt: got 1 answers for 2 prompts"):
        collect_activations(llama, tokenizer, PROMPTS[:2], position="answer", answers=["a"], progress=False)
    with pytest.raises(ValueError, match=r"answers \[1\] have no tokens"):
        collect_activations(llama, tokenizer, PROMPTS[:2], position="answer", answers=["a", []], progress=False)
    with pytest.raises(ValueError, match=r"answers \[0\] have no tokens"):
        collect_activations(llama, tokenizer, PROMPTS[:2], position="answer", answers=["", "b"], progress=False)
    with pytest.raises(ValueError, match="answer 0 must be a string or a sequence of token ids"):
        collect_activations(llama, tokenizer, PROMPTS[:2], position="answer", answers=[[1.5], "b"], progress=False)
    with pytest.raises(ValueError, match="answers are only read at position 'answer'"):
        collect_activations(llama, tokenizer, PROMPTS[:2], position="mean", answers=["a", "b"], progress=False)


def test_system_prompt_and_plain_text(llama):
    with_template = tiny_tokenizer()
    texts = format_prompts(with_template, ["Hello"], system_prompt="Be brief.")
    assert texts == ["<bos><|system|>Be brief.<|end|><|user|>Hello<|end|><|assistant|>"]
    acts = collect_activations(llama, with_template, ["Hello"], system_prompt="Be brief.", progress=False)
    reference = reference_block_outputs(llama, chat_ids(with_template, "Hello", system="Be brief."))
    torch.testing.assert_close(acts.activations[0, 2], reference[2][-1], rtol=1e-4, atol=1e-5)

    plain = tiny_tokenizer(chat_template=False)
    assert format_prompts(plain, ["Hello"]) == ["Hello"]
    assert format_prompts(plain, ["Hello"], system_prompt="Sys") == ["Sys\n\nHello"]
    acts = collect_activations(llama, plain, ["Hello there", "Hi"], batch_size=2, progress=False)
    reference = reference_block_outputs(llama, plain("Hello there", return_tensors="pt")["input_ids"])
    torch.testing.assert_close(acts.activations[0, 1], reference[1][-1], rtol=1e-4, atol=1e-5)


def test_layers_subset_stops_after_deepest_block(tokenizer, llama):
    calls = []
    handle = llama.model.layers[3].register_forward_hook(lambda *args: calls.append(1))
    norm_calls = []
    norm_handle = llama.model.norm.register_forward_hook(lambda *args: norm_calls.append(1))
    try:
        result = collect_activations(llama, tokenizer, PROMPTS[:3], layers=[np.int64(2), 1, -3], progress=False)
    finally:
        handle.remove()
        norm_handle.remove()
    assert result.layers == [1, 2]
    assert result.activations.shape == (3, 2, 64)
    assert calls == [] and norm_calls == []  # neither block 3 nor the final norm / lm_head ran
    everything = collect_activations(llama, tokenizer, PROMPTS[:3], progress=False).activations
    torch.testing.assert_close(result.activations, everything[:, 1:3])


def test_bfloat16_model(tokenizer):
    fp32 = tiny_model("llama")
    bf16 = tiny_model("llama", dtype=torch.bfloat16)
    a = collect_activations(fp32, tokenizer, PROMPTS[:4], position="mean", progress=False).activations
    b = collect_activations(bf16, tokenizer, PROMPTS[:4], position="mean", progress=False).activations
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).norm() / a.norm() < 0.05


def test_training_mode_restored(tokenizer):
    model = tiny_model("gpt2").train()  # dropout on: the collector must switch it off
    first = collect_activations(model, tokenizer, PROMPTS[:4], progress=False).activations
    second = collect_activations(model, tokenizer, PROMPTS[:4], progress=False).activations
    torch.testing.assert_close(first, second)
    assert model.training


def test_progress_bar_does_not_change_results(tokenizer, llama, capsys):
    quiet = collect_activations(llama, tokenizer, PROMPTS, progress=False).activations
    assert "activations" not in capsys.readouterr().err
    loud = collect_activations(llama, tokenizer, PROMPTS, progress=True).activations
    assert "activations" in capsys.readouterr().err
    torch.testing.assert_close(quiet, loud)


# ------------------------------------------------------------------------------------------ statistics


def test_statistics_match_raw_activations(tokenizer, llama):
    result = collect_activations(
        llama, tokenizer, PROMPTS, scores=SCORES, weighting="both", keep_activations=True, progress=False
    )
    acts = result.activations.double().numpy()
    refusal, compliance = SCORES > 0.1, SCORES < -0.1
    assert result.stats.count("refusal") == refusal.sum() and result.stats.count("compliance") == compliance.sum()
    for position, layer in enumerate(result.layers):
        x_r, x_c = acts[refusal, position], acts[compliance, position]
        np.testing.assert_allclose(result.stats.mean("refusal", layer).numpy(), x_r.mean(0), atol=1e-7)
        np.testing.assert_allclose(result.stats.covariance("compliance", layer).numpy(), np.cov(x_c.T), atol=1e-9)
        np.testing.assert_allclose(result.stats.covariance("refusal", layer).numpy(), np.cov(x_r.T), atol=1e-9)
        w_c = np.maximum(-SCORES[compliance], 0.01)
        np.testing.assert_allclose(
            result.weighted_stats.covariance("compliance", layer).numpy(),
            np.cov(x_c.T, aweights=w_c),
            atol=1e-9,
        )
    # estimators fitted from the streamed statistics equal estimators fitted on the raw activations
    streamed = RidgeMeanDifference().fit_statistics(result.stats, layer=2).direction_
    direct = RidgeMeanDifference().fit(result.layer_activations(2), scores=SCORES).direction_
    torch.testing.assert_close(streamed, direct, rtol=1e-4, atol=1e-4)
    streamed = WeightedRidgeMeanDifference().fit_statistics(result.weighted_stats, layer=1).direction_
    direct = WeightedRidgeMeanDifference().fit(result.layer_activations(1), scores=SCORES).direction_
    torch.testing.assert_close(streamed, direct, rtol=1e-4, atol=1e-4)


def test_neutral_prompts_are_not_forwarded_without_keep_activations(tokenizer, llama):
    seen = []
    handle = llama.model.layers[0].register_forward_hook(
        lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[0])
    )
    try:
        result = collect_activations(llama, tokenizer, PROMPTS, scores=SCORES, batch_size=32, progress=False)
    finally:
        handle.remove()
    used = int(((SCORES > 0.1) | (SCORES < -0.1)).sum())
    assert sum(seen) == used < len(PROMPTS)
    assert result.activations is None and result.weighted_stats is None
    assert result.keep.tolist() == ((SCORES > 0.1) | (SCORES < -0.1)).tolist()


def test_merge_of_halves_equals_whole():
    rng = np.random.default_rng(0)
    acts = torch.as_tensor(rng.normal(size=(50, 3, 8)) * 3 + 1)
    scores = rng.uniform(-1, 1, size=50)
    weights = rng.uniform(0.2, 2.0, size=50)
    for weighting in ("none", "confidence"):
        whole = ActivationStatistics(layers=[0, 4, 7], hidden_size=8, weighting=weighting)
        whole.add(acts, scores=scores, sample_weight=weights)
        halves = []
        for part in (slice(0, 23), slice(23, 50)):
            stats = ActivationStatistics(layers=[0, 4, 7], hidden_size=8, weighting=weighting)
            stats.add(acts[part], scores=scores[part], sample_weight=weights[part])
            halves.append(stats)
        merged = halves[0].merge(halves[1])
        for cls in ("refusal", "compliance"):
            assert merged.count(cls) == whole.count(cls)
            assert merged.weight_sum(cls) == pytest.approx(whole.weight_sum(cls), rel=1e-14)
            for layer in (0, 4, 7):
                torch.testing.assert_close(merged.mean(cls, layer), whole.mean(cls, layer), rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(
                    merged.covariance(cls, layer), whole.covariance(cls, layer), rtol=1e-12, atol=1e-12
                )
        assert halves[0].count("refusal") + halves[1].count("refusal") == whole.count("refusal")
    other = ActivationStatistics(layers=[0, 4], hidden_size=8)
    with pytest.raises(ValueError, match="different layers"):
        whole.merge(other)


def test_merge_of_collection_runs(tokenizer, llama):
    whole = collect_activations(llama, tokenizer, PROMPTS, labels=LABELS, progress=False).stats
    first = collect_activations(llama, tokenizer, PROMPTS[:7], labels=LABELS[:7], progress=False).stats
    second = collect_activations(llama, tokenizer, PROMPTS[7:], labels=LABELS[7:], progress=False).stats
    merged = first + second
    for cls in ("refusal", "compliance"):
        assert merged.count(cls) == whole.count(cls)
        torch.testing.assert_close(merged.mean(cls, 3), whole.mean(cls, 3), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(merged.covariance(cls, 3), whole.covariance(cls, 3), rtol=1e-4, atol=1e-8)


def test_second_moments_option():
    stats = ActivationStatistics(layers=[0], hidden_size=4, second_moments="compliance")
    assert stats.nbytes == (4 + 4 + 16) * 8
    stats.update(torch.randn(6, 1, 4), [True, True, True, False, False, False])
    assert stats.covariance("compliance", 0).shape == (4, 4)
    with pytest.raises(ValueError, match="no second moments for the refusal class"):
        stats.covariance("refusal", 0)


# ------------------------------------------------------------------------------------------ storage


def test_statistics_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    stats = ActivationStatistics(
        layers=[2, 5], hidden_size=6, weighting="confidence", epsilon=0.05, metadata={"model": "tiny"}
    )
    stats.add(torch.as_tensor(rng.normal(size=(20, 2, 6))), scores=rng.uniform(-1, 1, size=20))
    path = stats.save(tmp_path / "stats")
    assert path.name == "stats.safetensors" and (tmp_path / "stats.json").exists()
    info = json.loads((tmp_path / "stats.json").read_text())
    assert info["layers"] == [2, 5] and info["weighting"] == "confidence"
    for source in (path, tmp_path / "stats.json"):
        loaded = ActivationStatistics.load(source)
        assert (loaded.layers, loaded.epsilon, loaded.metadata) == ([2, 5], 0.05, {"model": "tiny"})
        for cls in ("refusal", "compliance"):
            assert loaded.count(cls) == stats.count(cls) and loaded.weight_sum(cls) == stats.weight_sum(cls)
            assert torch.equal(loaded.covariance(cls, 5), stats.covariance(cls, 5))
            assert torch.equal(loaded.mean(cls, 2), stats.mean(cls, 2))


def test_collection_result_save_load(tmp_path, tokenizer, llama):
    result = collect_activations(
        llama,
        tokenizer,
        PROMPTS,
        layers=[0, 3],
        scores=SCORES,
        weighting="both",
        keep_activations=True,
        save_dir=tmp_path / "run",
        progress=False,
    )
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {
        "collection.json",
        "activations.safetensors",
        "statistics.safetensors",
        "statistics.json",
    } <= files
    loaded = CollectionResult.load(tmp_path / "run")
    assert loaded.layers == [0, 3] and loaded.position == "last" and loaded.n_prompts == len(PROMPTS)
    assert torch.equal(loaded.activations, result.activations)
    assert torch.equal(loaded.scores, result.scores) and torch.equal(loaded.keep, result.keep)
    assert torch.equal(loaded.stats.covariance("compliance", 3), result.stats.covariance("compliance", 3))
    assert loaded.weighted_stats.weighting == "confidence"
    assert loaded.metadata["blocks_path"] == "model.layers"


# ------------------------------------------------------------------------------------------ errors


def test_bad_inputs(tokenizer, llama):
    with pytest.raises(ValueError, match="prompt list is empty"):
        collect_activations(llama, tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="not a single string"):
        collect_activations(llama, tokenizer, "hello", progress=False)
    with pytest.raises(ValueError, match="layer index 4 is out of range: the model has 4 decoder blocks"):
        ActivationCollector(llama, tokenizer, layers=[0, 4])
    with pytest.raises(ValueError, match="layer index -5 is out of range"):
        ActivationCollector(llama, tokenizer, layers=[-5])
    with pytest.raises(ValueError, match="unknown position 'first'"):
        ActivationCollector(llama, tokenizer, position="first")
    with pytest.raises(ValueError, match="batch_size"):
        ActivationCollector(llama, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match=r"scores must have shape \[14\]"):
        collect_activations(llama, tokenizer, PROMPTS, scores=SCORES[:3], progress=False)
    with pytest.raises(ValueError, match="every prompt is neutral"):
        collect_activations(llama, tokenizer, PROMPTS, scores=np.zeros(len(PROMPTS)), progress=False)
    with pytest.raises(ValueError, match="needs refusal-confidence scores"):
        collect_activations(llama, tokenizer, PROMPTS, labels=LABELS, weighting="confidence", progress=False)
    with pytest.raises(ValueError, match="tokenise to no tokens"):
        collect_activations(llama, tiny_tokenizer(chat_template=False), ["ok", ""], progress=False)


def test_assign_labels_rules():
    scores = np.array([0.5, 0.1, -0.1, -0.7, 0.0, 0.11])
    assignment = assign_labels(6, scores=scores, weighting="confidence", epsilon=0.2)
    assert assignment.keep.tolist() == [True, False, False, True, False, True]
    assert assignment.is_refusal.tolist() == [True, False, False, False, False, True]
    np.testing.assert_allclose(assignment.weights.numpy()[[0, 3, 5]], [0.5, 0.7, 0.2])
    explicit = assign_labels(6, labels=[1, 0, 1, 0, 1, 0], scores=scores, weighting="confidence", epsilon=0.2)
    assert explicit.keep.all()
    np.testing.assert_allclose(explicit.weights.numpy(), [0.5, 0.2, 0.2, 0.7, 0.2, 0.2])
    # NaN = unscored (no usable judge label): neutral, and no confidence weight; inf is an error
    unscored = np.array([0.5, np.nan, -0.7])
    assert assign_labels(3, scores=unscored).keep.tolist() == [True, False, True]
    weighted = assign_labels(3, labels=[True, True, False], scores=unscored, weighting="confidence")
    assert weighted.keep.tolist() == [True, False, True] and np.isfinite(weighted.weights.numpy()).all()
    with pytest.raises(ValueError, match="scores contains non-finite values"):
        assign_labels(3, scores=[0.5, np.inf, -0.7])
