"""Every loading flow users know, on adapter folders written by hand from the format contract."""

from __future__ import annotations

import json
import os

import pytest
import torch
from architectures import BLOCK_PATHS, HIDDEN, LAYERS, tiny_model
from peft import AutoPeftModelForCausalLM, PeftModel
from reference import contract_hooks
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import steering_adapter  # noqa: F401  (registers STEERING)
from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.adapter.cards import read_front_matter

ATOL = 1e-5
IDS = torch.tensor([[5, 17, 42, 9, 33, 70, 3], [8, 8, 120, 64, 1, 2, 99]])


def vectors_for(layers, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(HIDDEN, generator=generator) for layer in layers}


def write_contract_adapter(folder, arch, vectors, *, scale=1.0, mode="add", base=None, extra=None, tensors=None):
    """An adapter folder made only from the contract (docs/adapter-format.md), with no library code."""
    os.makedirs(folder, exist_ok=True)
    config = {
        "peft_type": "STEERING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "revision": None,
        "layers": sorted(vectors),
        "scale": scale,
        "layer_scales": None,
        "mode": mode,
        "positions": "all",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
    }
    config.update(extra or {})
    with open(os.path.join(folder, "adapter_config.json"), "w") as handle:
        json.dump(config, handle)
    if tensors is None:
        tensors = {
            f"base_model.model.{BLOCK_PATHS[arch]}.{layer}.steering_vector": vector.contiguous()
            for layer, vector in vectors.items()
        }
    save_file(tensors, os.path.join(folder, "adapter_model.safetensors"))
    return str(folder)


def expected_logits(arch, vectors, scale=1.0, mode="add"):
    model = tiny_model(arch)
    with contract_hooks(model, BLOCK_PATHS[arch], [{"vectors": vectors, "scale": scale, "mode": mode}]):
        with torch.no_grad():
            return model(IDS).logits


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
@pytest.mark.parametrize("mode", ["add", "ablate"])
def test_hand_written_adapter_loads_with_load_adapter_and_peft(tmp_path, arch, mode):
    vectors = vectors_for([1, 2])
    folder = write_contract_adapter(tmp_path / "adapter", arch, vectors, scale=-2.5, mode=mode)
    expected = expected_logits(arch, vectors, -2.5, mode)
    assert not torch.allclose(expected, logits(tiny_model(arch)), atol=1e-3)

    model = tiny_model(arch)
    model.load_adapter(folder, adapter_name="probe")
    torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=1e-5)

    peft_model = PeftModel.from_pretrained(tiny_model(arch), folder)
    torch.testing.assert_close(logits(peft_model), expected, atol=ATOL, rtol=1e-5)


@pytest.fixture
def saved_base(tmp_path):
    """A tiny Llama saved to disk, so adapters can name it as base_model_name_or_path."""
    path = tmp_path / "base"
    tiny_model("llama").save_pretrained(path)
    return str(path)


def test_get_peft_model_save_then_every_flow(tmp_path, saved_base):
    vectors = vectors_for([0, 3], seed=4)
    base = AutoModelForCausalLM.from_pretrained(saved_base).eval()
    model = adapter_from_vectors(base, vectors, scale=1.7, steering_metadata={"method": "rmd"})
    adapter_dir = save_adapter(model, tmp_path / "adapter")
    expected = expected_logits("llama", vectors, 1.7)
    torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=1e-5)

    saved = json.loads(open(os.path.join(adapter_dir, "adapter_config.json")).read())
    assert saved["base_model_name_or_path"] == saved_base
    assert saved["peft_type"] == "STEERING" and saved["steering_metadata"] == {"method": "rmd"}
    card = open(os.path.join(adapter_dir, "README.md")).read()
    front = read_front_matter(card)
    assert front["library_name"] == "peft" and "steering" in front["tags"]
    assert "base_model" not in front  # a local folder is no Hub id; the card's usage code names it instead
    assert f'AutoModelForCausalLM.from_pretrained("{saved_base}")' in card

    # PeftModel.from_pretrained
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(saved_base).eval(), adapter_dir)
    torch.testing.assert_close(logits(peft_model), expected, atol=ATOL, rtol=1e-5)
    # AutoPeftModelForCausalLM resolves the base model from the adapter config
    auto_peft = AutoPeftModelForCausalLM.from_pretrained(adapter_dir).eval()
    torch.testing.assert_close(logits(auto_peft), expected, atol=ATOL, rtol=1e-5)
    # transformers: AutoModelForCausalLM.from_pretrained(adapter_dir) resolves the base model too
    auto = AutoModelForCausalLM.from_pretrained(adapter_dir).eval()
    torch.testing.assert_close(logits(auto), expected, atol=ATOL, rtol=1e-5)
    # transformers: load_adapter by name, then switch adapters off and on
    plain = AutoModelForCausalLM.from_pretrained(saved_base).eval()
    reference_plain = logits(plain)
    plain.load_adapter(adapter_dir, adapter_name="no_refusal")
    torch.testing.assert_close(logits(plain), expected, atol=ATOL, rtol=1e-5)
    plain.disable_adapters()
    assert torch.equal(logits(plain), reference_plain)
    plain.enable_adapters()
    torch.testing.assert_close(logits(plain), expected, atol=ATOL, rtol=1e-5)


def test_two_adapters_through_transformers_load_adapter(tmp_path):
    first, second = vectors_for([1], seed=1), vectors_for([1, 2], seed=2)
    a = write_contract_adapter(tmp_path / "a", "llama", first, scale=2.0)
    b = write_contract_adapter(tmp_path / "b", "llama", second, mode="ablate")
    model = tiny_model("llama")
    model.load_adapter(a, adapter_name="a")
    model.load_adapter(b, adapter_name="b")
    model.set_adapter(["a", "b"])
    reference = tiny_model("llama")
    specs = [{"vectors": first, "scale": 2.0}, {"vectors": second, "mode": "ablate"}]
    with contract_hooks(reference, "model.layers", specs), torch.no_grad():
        expected = reference(IDS).logits
    torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=1e-5)


def test_peft_load_adapter_adds_second_adapter(tmp_path):
    first, second = vectors_for([0], seed=5), vectors_for([3], seed=6)
    a = write_contract_adapter(tmp_path / "a", "qwen3", first, scale=3.0)
    b = write_contract_adapter(tmp_path / "b", "qwen3", second, scale=-1.0)
    model = PeftModel.from_pretrained(tiny_model("qwen3"), a, adapter_name="a")
    model.load_adapter(b, adapter_name="b")
    model.base_model.set_adapter(["a", "b"])
    reference = tiny_model("qwen3")
    specs = [{"vectors": first, "scale": 3.0}, {"vectors": second, "scale": -1.0}]
    with contract_hooks(reference, "model.layers", specs), torch.no_grad():
        expected = reference(IDS).logits
    torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- bad input
def test_hidden_size_mismatch_names_both_numbers(tmp_path):
    vectors = {1: torch.randn(48)}  # a self-consistent adapter for a model of hidden size 48
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors, extra={"hidden_size": 48})
    with pytest.raises(ValueError, match=r"hidden_size=48.*hidden_size=32"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)
    with pytest.raises(ValueError, match=r"hidden_size=48.*hidden_size=32"):
        tiny_model("llama").load_adapter(folder)


def test_depth_mismatch_names_both_numbers(tmp_path):
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors_for([1]), extra={"num_hidden_layers": 6})
    with pytest.raises(ValueError, match=r"num_hidden_layers=6.*num_hidden_layers=4"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)


def test_unknown_layer_index(tmp_path):
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors_for([1, 7]))
    with pytest.raises(ValueError, match=r"unknown layer index \[7\]"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)


def test_unknown_mode(tmp_path):
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors_for([1]), mode="multiply")
    with pytest.raises(ValueError, match="unknown steering mode 'multiply'"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)


def test_nan_vector_is_refused(tmp_path):
    vectors = vectors_for([1, 2])
    vectors[2][5] = float("nan")
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors)
    with pytest.raises(ValueError, match="adapter_model.safetensors: steering vector for layer 2 contains NaN or Inf"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="adapter_model.safetensors: steering vector for layer 2 contains NaN or Inf"):
        model.load_adapter(folder)  # refused at load time, before anything is attached
    assert not getattr(model, "_hf_peft_config_loaded", False)
    assert torch.equal(logits(model), logits(tiny_model("llama")))


def test_inf_vector_is_refused(tmp_path):
    vectors = vectors_for([1])
    vectors[1][0] = float("inf")
    folder = write_contract_adapter(tmp_path / "x", "gpt2", vectors)
    with pytest.raises(ValueError, match="NaN or Inf"):
        PeftModel.from_pretrained(tiny_model("gpt2"), folder)


def test_missing_vector_never_loads_as_initial_value(tmp_path):
    vectors = vectors_for([1, 2])
    tensors = {"base_model.model.model.layers.1.steering_vector": vectors[1]}
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors, tensors=tensors)
    missing = r"adapter_model.safetensors: missing steering vector 'base_model.model.model.layers.2.steering_vector'"
    with pytest.raises(ValueError, match=missing):
        PeftModel.from_pretrained(tiny_model("llama"), folder)
    with pytest.raises(ValueError, match=missing):
        tiny_model("llama").load_adapter(folder)  # transformers alone would only log the missing key


def test_wrong_shape_vector(tmp_path):
    vectors = vectors_for([1])
    tensors = {"base_model.model.model.layers.1.steering_vector": torch.randn(HIDDEN + 1)}
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors, tensors=tensors)
    with pytest.raises(ValueError, match=r"shape \(33,\), expected \(32,\)"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)


def test_vector_for_unconfigured_layer(tmp_path):
    vectors = vectors_for([1])
    tensors = {f"base_model.model.model.layers.{i}.steering_vector": torch.randn(HIDDEN) for i in (1, 3)}
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors, tensors=tensors)
    with pytest.raises(ValueError, match="do not belong to the configured layers"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)


def test_pickle_weights_are_never_read(tmp_path):
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors_for([1]))
    os.replace(os.path.join(folder, "adapter_model.safetensors"), os.path.join(folder, "adapter_model.bin"))
    with pytest.raises(ValueError, match="safetensors only.*adapter_model.bin"):
        PeftModel.from_pretrained(tiny_model("llama"), folder)
    with pytest.raises(ValueError, match="safetensors only.*adapter_model.bin"):
        tiny_model("llama").load_adapter(folder)


def test_set_vectors_errors():
    model = adapter_from_vectors(tiny_model("llama"), vectors_for([1, 2]))
    with pytest.raises(ValueError, match=r"missing \[2\]"):
        model.base_model.set_vectors({1: torch.randn(HIDDEN)})
    with pytest.raises(ValueError, match=r"shape \(31,\), expected \(32,\)"):
        model.base_model.set_vectors({1: torch.randn(HIDDEN - 1), 2: torch.randn(HIDDEN)})
    with pytest.raises(ValueError, match="NaN"):
        model.base_model.set_vectors({1: torch.full((HIDDEN,), float("nan")), 2: torch.randn(HIDDEN)})
    with pytest.raises(ValueError, match="vectors is empty"):
        adapter_from_vectors(tiny_model("llama"), {})
    with pytest.raises(ValueError, match="must hold non-negative ints"):
        adapter_from_vectors(tiny_model("llama"), {-1: torch.randn(HIDDEN)})


def test_merge_is_refused():
    model = adapter_from_vectors(tiny_model("llama"), vectors_for([1]))
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()


def test_set_adapter_scale_on_transformers_loaded_adapter(tmp_path):
    vectors = vectors_for([2])
    folder = write_contract_adapter(tmp_path / "x", "llama", vectors, scale=1.0)
    model = tiny_model("llama")
    model.load_adapter(folder, adapter_name="scaled")
    steering_adapter.set_adapter_scale(model, -4.0, "scaled")
    torch.testing.assert_close(logits(model), expected_logits("llama", vectors, -4.0), atol=ATOL, rtol=1e-5)
    with pytest.raises(ValueError, match="no steering adapter named 'nope'"):
        steering_adapter.set_adapter_scale(model, 1.0, "nope")
    with pytest.raises(ValueError, match="finite"):
        steering_adapter.set_adapter_scale(model, float("nan"), "scaled")
