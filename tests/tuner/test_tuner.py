"""The steering tuner against an independent forward-hook reference, on every supported architecture."""

from __future__ import annotations

import json

import pytest
import torch
from architectures import ARCHITECTURES, BLOCK_PATHS, HIDDEN, LAYERS, VOCAB, tiny_model, tiny_multimodal_model
from peft import PeftModel, get_peft_model
from reference import contract_hooks

import steering_adapter
from steering_adapter import SteeringConfig, adapter_from_vectors
from steering_adapter.tuner.layer import SteeringLayer

ATOL = 1e-5


def random_vectors(layers, seed=1, hidden=HIDDEN):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(hidden, generator=generator) for layer in layers}


def input_ids(batch=2, length=7, seed=3):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def reference_logits(model, arch, adapters, ids):
    with contract_hooks(model, BLOCK_PATHS[arch], adapters), torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("mode", ["add", "ablate"])
def test_matches_reference_on_every_architecture(arch, mode):
    base = tiny_model(arch)
    ids = input_ids()
    vectors = random_vectors([1, 3])
    spec = {"vectors": vectors, "scale": -1.5, "layer_scales": {"3": 0.5}, "mode": mode}
    expected = reference_logits(base, arch, [spec], ids)
    with torch.no_grad():
        plain = base(ids).logits
    model = adapter_from_vectors(base, vectors, scale=-1.5, layer_scales={"3": 0.5}, mode=mode)
    with torch.no_grad():
        got = model(ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3), "the steering must change the logits"
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)
    wrapped = [name for name, module in model.named_modules() if isinstance(module, SteeringLayer)]
    assert [name.split(".")[-1] for name in wrapped] == ["1", "3"]
    assert all(BLOCK_PATHS[arch] in name for name in wrapped)


def test_multimodal_model_steers_text_blocks_only():
    model = tiny_multimodal_model()
    vectors = random_vectors([0, 2])
    peft_model = adapter_from_vectors(model, vectors, scale=2.0)
    wrapped = [name for name, module in peft_model.named_modules() if isinstance(module, SteeringLayer)]
    assert wrapped and all("language_model.layers" in name for name in wrapped)
    assert not any("vision" in name for name in wrapped)


def test_explicit_blocks_path_and_error_listing_candidates():
    base = tiny_model("llama")
    vectors = random_vectors([0])
    with pytest.raises(ValueError, match=r"'model.layers' \(len 4\)"):
        adapter_from_vectors(base, vectors, blocks_path="model.nope")
    model = adapter_from_vectors(tiny_model("llama"), vectors, blocks_path="model.layers")
    assert model.peft_config["default"].blocks_path == "model.layers"


def test_output_hidden_states_report_steered_states():
    base = tiny_model("qwen3")
    ids = input_ids()
    vectors = random_vectors([1])
    captured = {}
    block = base.model.layers[1]
    handle = block.register_forward_hook(
        lambda m, a, o: captured.setdefault("h", (o[0] if isinstance(o, tuple) else o))
    )
    with contract_hooks(base, "model.layers", [{"vectors": vectors, "scale": 3.0}]), torch.no_grad():
        base(ids)
    handle.remove()
    model = adapter_from_vectors(base, vectors, scale=3.0)
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    # hook order: the capture hook ran before the steering hook, so add the delta by hand
    expected = captured["h"] + 3.0 * vectors[1]
    torch.testing.assert_close(states[2], expected, atol=ATOL, rtol=1e-5)


def test_generate_with_and_without_cache_matches_reference():
    base = tiny_model("llama")
    ids = input_ids(batch=1, length=5)
    vectors = random_vectors([0, 2, 3], seed=5)
    spec = {"vectors": vectors, "scale": 4.0}
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with contract_hooks(base, "model.layers", [spec]), torch.no_grad():
        expected = base.generate(ids, use_cache=True, **kwargs)
        expected_nocache = base.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(expected, expected_nocache)
    with torch.no_grad():
        plain = base.generate(ids, **kwargs)
    assert not torch.equal(plain, expected), "vectors too weak to change greedy decoding"
    model = adapter_from_vectors(base, vectors, scale=4.0)
    with torch.no_grad():
        assert torch.equal(model.generate(input_ids=ids, use_cache=True, **kwargs), expected)
        assert torch.equal(model.generate(input_ids=ids, use_cache=False, **kwargs), expected)


def test_disable_enable_and_unload_bit_identical():
    base = tiny_model("gpt2")
    ids = input_ids()
    with torch.no_grad():
        plain = base(ids).logits.clone()
    model = adapter_from_vectors(base, random_vectors([1, 2]), scale=2.0)
    with torch.no_grad():
        steered = model(ids).logits.clone()
        with model.disable_adapter():
            assert torch.equal(model(ids).logits, plain)
        assert torch.equal(model(ids).logits, steered)
        model.base_model.disable_adapter_layers()
        assert torch.equal(model(ids).logits, plain)
        model.base_model.enable_adapter_layers()
        assert torch.equal(model(ids).logits, steered)
    unloaded = model.unload()
    assert not any(isinstance(m, SteeringLayer) for m in unloaded.modules())
    with torch.no_grad():
        assert torch.equal(unloaded(ids).logits, plain)


def test_several_adapters_apply_in_activation_order():
    base = tiny_model("llama")
    ids = input_ids()
    first = random_vectors([1, 2], seed=7)
    second = random_vectors([2, 3], seed=8)
    model = adapter_from_vectors(base, first, scale=1.0, adapter_name="a")
    adapter_from_vectors(model, second, mode="ablate", adapter_name="b")
    model.base_model.set_adapter(["a", "b"])
    order_ab = [{"vectors": first, "scale": 1.0}, {"vectors": second, "mode": "ablate"}]
    order_ba = list(reversed(order_ab))
    with torch.no_grad():
        got_ab = model(ids).logits
        model.base_model.set_adapter(["b", "a"])
        got_ba = model(ids).logits
    unloaded = model.unload()
    expected_ab = reference_logits(unloaded, "llama", order_ab, ids)
    expected_ba = reference_logits(unloaded, "llama", order_ba, ids)
    assert not torch.allclose(expected_ab, expected_ba, atol=1e-4), "order must matter for add then ablate"
    torch.testing.assert_close(got_ab, expected_ab, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(got_ba, expected_ba, atol=ATOL, rtol=1e-5)


def test_weighted_combination_saved_as_new_adapter(tmp_path):
    base = tiny_model("qwen3")
    ids = input_ids()
    first, second = random_vectors([1, 2], seed=11), random_vectors([2, 3], seed=12)
    model = adapter_from_vectors(base, first, scale=-2.0, adapter_name="a")
    adapter_from_vectors(model, second, scale=3.0, layer_scales={"3": 0.5}, adapter_name="b")
    model.base_model.add_weighted_adapter(["a", "b"], [0.5, 2.0], adapter_name="mix")
    steering_adapter.save_adapter(model, tmp_path / "mix", adapter_name="mix")
    reloaded = PeftModel.from_pretrained(model.unload(), tmp_path / "mix")
    expected = reference_logits(
        reloaded.get_base_model() if False else tiny_model("qwen3"),
        "qwen3",
        [
            {"vectors": first, "scale": -2.0 * 0.5},
            {"vectors": second, "scale": 3.0 * 2.0, "layer_scales": {"3": 0.5}},
        ],
        ids,
    )
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, atol=ATOL, rtol=1e-5)
    saved = json.loads((tmp_path / "mix" / "adapter_config.json").read_text())
    assert saved["layers"] == [1, 2, 3]
    assert [part["adapter"] for part in saved["steering_metadata"]["parts"]] == ["a", "b"]


def test_set_scale_changes_effect_and_is_saved(tmp_path):
    base = tiny_model("llama")
    ids = input_ids()
    vectors = random_vectors([2])
    model = adapter_from_vectors(base, vectors, scale=1.0)
    model.base_model.set_scale(-5.0)
    with torch.no_grad():
        got = model(ids).logits
    expected = reference_logits(model.unload(), "llama", [{"vectors": vectors, "scale": -5.0}], ids)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)


def test_bfloat16_model_uses_cached_delta_per_dtype():
    base = tiny_model("llama", dtype=torch.bfloat16)
    ids = input_ids()
    vectors = random_vectors([1, 2])
    expected = reference_logits(base, "llama", [{"vectors": vectors, "scale": 2.0}], ids)
    model = adapter_from_vectors(base, vectors, scale=2.0)
    with torch.no_grad():
        got = model(ids).logits
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), atol=0.05, rtol=0.02)
    layer = model.base_model.model.model.layers[1]
    assert layer._plan[0][1].dtype == torch.bfloat16
    assert layer.steering_vector["default"].dtype == torch.float32


def test_get_peft_model_with_config_then_set_vectors():
    base = tiny_model("olmo2")
    config = SteeringConfig(layers=[0, 3], scale=0.7)
    model = get_peft_model(base, config)
    assert config.hidden_size == HIDDEN and config.num_hidden_layers == LAYERS
    with pytest.raises(ValueError, match="never loaded"):
        model(input_ids())
    vectors = random_vectors([0, 3])
    model.base_model.set_vectors(vectors)
    got = model.base_model.get_vectors()
    assert set(got) == {0, 3} and torch.equal(got[0], vectors[0])


def test_vectors_frozen_by_default_and_trainable_on_request():
    model = adapter_from_vectors(tiny_model("llama"), random_vectors([1]))
    assert not any(p.requires_grad for p in model.parameters())
    config = SteeringConfig(layers=[1], inference_mode=False, init_vectors="zeros")
    trainable = get_peft_model(tiny_model("llama"), config)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names == ["base_model.model.model.layers.1.steering_vector.default"]
    loss = trainable(input_ids(), labels=input_ids()).loss
    loss.backward()
    grad = trainable.base_model.model.model.layers[1].steering_vector["default"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
