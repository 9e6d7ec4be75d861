"""The vLLM adapter reader and writer (steering_adapter.runtimes.vllm.adapters: no vLLM needed): validation through
this
package's own reader, and folders written from vectors alone load through PEFT with the same effect."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from reference import contract_hooks

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.adapter.composition import save_composition
from steering_adapter.runtimes.vllm import AdapterSpec, parse_adapter_specs, read_adapter, write_adapter

HIDDEN, LAYERS = 64, 4


def _vectors(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(HIDDEN, generator=generator) for layer in (1, 2)}


@pytest.fixture
def saved(tmp_path, llama):
    peft_model = adapter_from_vectors(llama, _vectors(), scale=-2.0, layer_scales={"2": 0.5})
    save_adapter(peft_model, tmp_path / "a")
    peft_model.unload()
    return tmp_path / "a"


def test_read_adapter_matches_the_saved_vectors(saved):
    adapter = read_adapter(AdapterSpec(str(saved), name="x"), HIDDEN, LAYERS)
    assert adapter.name == "x" and not adapter.gated
    assert sorted(adapter.vectors) == [1, 2]
    for layer, vector in _vectors().items():
        torch.testing.assert_close(adapter.vectors[layer], vector)
    assert adapter.step(2)[2:4] == ("add", -1.0)
    assert adapter.step(0) is None
    assert read_adapter(AdapterSpec(str(saved), scale=3.0), HIDDEN, LAYERS).step(1)[3] == 3.0


def test_read_adapter_refuses_what_does_not_fit(saved, tmp_path):
    with pytest.raises(ValueError, match="hidden_size=64 but the engine's model has hidden_size=32"):
        read_adapter(AdapterSpec(str(saved)), 32, LAYERS)
    with pytest.raises(ValueError, match="num_hidden_layers=4 but the engine's model has num_hidden_layers=8"):
        read_adapter(AdapterSpec(str(saved)), HIDDEN, 8)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((saved / "adapter_config.json").read_text())
    (pickled / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="never read"):
        read_adapter(AdapterSpec(str(pickled)), HIDDEN, LAYERS)
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match="not 'STEERING'"):
        read_adapter(AdapterSpec(str(lora)), HIDDEN, LAYERS)
    composition = save_composition(tmp_path / "comp", [("a", saved, 1.0)])
    with pytest.raises(ValueError, match="composition folder"):
        read_adapter(AdapterSpec(str(composition)), HIDDEN, LAYERS)


def test_read_adapter_refuses_bad_tensors(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(saved / "adapter_model.safetensors"))
    key = next(iter(tensors))
    for name, change in {
        "nan": lambda t: {**t, key: torch.full((HIDDEN,), float("nan"))},
        "missing": lambda t: {k: v for k, v in t.items() if k != key},
    }.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text((saved / "adapter_config.json").read_text())
        save_file(change(tensors), str(folder / "adapter_model.safetensors"))
        with pytest.raises(ValueError, match="NaN|missing steering vector"):
            read_adapter(AdapterSpec(str(folder)), HIDDEN, LAYERS)


def test_written_adapter_loads_through_peft_with_the_contract_effect(tmp_path, llama):
    vectors = _vectors(1)
    folder = write_adapter(
        tmp_path / "w", vectors, hidden_size=HIDDEN, num_hidden_layers=LAYERS, scale=1.5, layer_scales={"1": -1.0}
    )
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with contract_hooks(llama, "model.layers", [{"vectors": vectors, "scale": 1.5, "layer_scales": {"1": -1.0}}]):
        with torch.no_grad():
            expected = llama(ids).logits
    peft_model = PeftModel.from_pretrained(llama, str(folder))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, expected)
    peft_model.unload()
    again = read_adapter(AdapterSpec(str(folder)), HIDDEN, LAYERS)
    assert again.config.scale == 1.5 and again.config.layer_scales == {"1": -1.0}


def test_written_gated_adapter_keeps_its_condition(tmp_path):
    condition = torch.ones(HIDDEN)
    folder = write_adapter(
        tmp_path / "g",
        _vectors(),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        condition=condition,
        condition_layer=1,
        condition_threshold=0.5,
    )
    adapter = read_adapter(AdapterSpec(str(folder)), HIDDEN, LAYERS)
    assert adapter.gated and adapter.config.condition_threshold == 0.5
    torch.testing.assert_close(adapter.condition, condition)
    with pytest.raises(ValueError, match="condition vector needs condition_layer"):
        write_adapter(tmp_path / "x", _vectors(), hidden_size=HIDDEN, num_hidden_layers=LAYERS, condition=condition)


def test_parse_adapter_specs():
    specs = parse_adapter_specs(["a", {"path": "b", "scale": -1, "name": "bee"}])
    assert specs == [AdapterSpec("a"), AdapterSpec("b", name="bee", scale=-1.0)]
    with pytest.raises(ValueError, match="unknown"):
        parse_adapter_specs([{"path": "a", "alpha": 1}])
    with pytest.raises(ValueError, match="unique"):
        parse_adapter_specs(["a", "a"])
    with pytest.raises(ValueError, match="scale must be a number"):
        parse_adapter_specs([{"path": "a", "scale": "big"}])


def test_read_adapter_runs_the_loaders_check(saved, tmp_path):
    """The vLLM reader refuses what PEFT's loaders refuse: a misspelt key, a zero ablation direction."""
    from safetensors.torch import load_file, save_file

    config = json.loads((saved / "adapter_config.json").read_text())
    misspelt = tmp_path / "misspelt"
    misspelt.mkdir()
    (misspelt / "adapter_config.json").write_text(json.dumps({**config, "scael": -2.7}))
    (misspelt / "adapter_model.safetensors").write_bytes((saved / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"unknown key 'scael' \(did you mean 'scale'\?\)"):
        read_adapter(AdapterSpec(str(misspelt)), HIDDEN, LAYERS)
    ablate = tmp_path / "ablate"
    ablate.mkdir()
    (ablate / "adapter_config.json").write_text(json.dumps({**config, "mode": "ablate"}))
    tensors = load_file(str(saved / "adapter_model.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in tensors.items()}, str(ablate / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="adapter_model.safetensors.*ablat|ablat.*adapter_model.safetensors"):
        read_adapter(AdapterSpec(str(ablate)), HIDDEN, LAYERS)
