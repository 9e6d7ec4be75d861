"""``lora`` and ``merged`` exports: stock PEFT / transformers in a fresh interpreter (no steering_adapter import)
reproduce the steering adapter, checked against the hand-written hook reference, on every architecture the export
accepts; the others are refused with the reason."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from export_cases import (
    LAYER_SCALES,
    LAYERS,
    SCALE,
    blocks_path,
    input_ids,
    random_vectors,
    save_base_and_adapter,
    tiny_base,
)
from peft import PeftModel
from reference import contract_hooks
from safetensors.torch import load_file

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.cli import main as cli_main
from steering_adapter.runtimes.export import NotExpressibleError, export_adapter

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
LORA_CASES = ("organism", "llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "gpt_neox", "gpt_neox_sequential")
MERGED_CASES = ("llama", "gpt2", "gpt_neox", "gpt_neox_sequential")
POST_NORM = ("gemma2", "gemma3_text", "olmo2")
MOE = ("qwen3_moe", "qwen3_next")
NO_BIAS = ("mistral", "qwen2", "qwen3", "phi3")
STOCK_RUNTIME = Path(__file__).resolve().parents[1] / "helpers" / "stock_runtime.py"


def hook_reference(model, case: str, vectors, ids) -> torch.Tensor:
    spec = {"vectors": vectors, "scale": SCALE, "layer_scales": LAYER_SCALES}
    with contract_hooks(model, blocks_path(case), [spec]), torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export every accepted case, run them all in one fresh interpreter; return logits, references, provenance."""
    root = tmp_path_factory.mktemp("weights-exports")
    ids = input_ids()
    jobs, expected = [], {}
    for case in sorted(set(LORA_CASES) | set(MERGED_CASES)):
        base_dir, adapter_dir, vectors = save_base_and_adapter(case, root / case)
        model = tiny_base(case)
        with torch.no_grad():
            plain = model(ids).logits
        reference = hook_reference(model, case, vectors, ids)
        library = PeftModel.from_pretrained(tiny_base(case), str(adapter_dir))
        with torch.no_grad():
            steered = library(ids).logits
        expected[case] = {"plain": plain, "reference": reference, "library": steered, "adapter": adapter_dir}
        for export_format in ("lora", "merged"):
            if case in (LORA_CASES if export_format == "lora" else MERGED_CASES):
                out = export_adapter(adapter_dir, export_format, root / case / export_format)
                jobs.append(
                    {
                        "name": f"{case}/{export_format}",
                        "format": export_format,
                        "base": str(base_dir),
                        "export": str(out),
                        "input_ids": ids.tolist(),
                    }
                )
    (root / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run(
        [sys.executable, str(STOCK_RUNTIME), str(root / "jobs.json"), str(root / "logits.safetensors")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logits = load_file(root / "logits.safetensors")
    provenance = json.loads((root / "logits.json").read_text())
    return logits, expected, provenance


@pytest.mark.parametrize(
    "case, export_format",
    [(case, "lora") for case in LORA_CASES] + [(case, "merged") for case in MERGED_CASES],
)
def test_stock_runtime_reproduces_the_steering_adapter(exports, case, export_format):
    logits, expected, provenance = exports
    got = logits[f"{case}/{export_format}"]
    reference = expected[case]["reference"]
    assert (reference - expected[case]["plain"]).abs().max() > 0.1, "the steering must change the logits"
    torch.testing.assert_close(expected[case]["library"], reference, atol=ATOL, rtol=0)
    assert (got - reference).abs().max().item() <= ATOL
    record = provenance[f"{case}/{export_format}"]
    adapter_dir = expected[case]["adapter"]
    assert record["source_sha256"] == {
        name: hashlib.sha256((adapter_dir / name).read_bytes()).hexdigest()
        for name in ("adapter_config.json", "adapter_model.safetensors")
    }
    assert record["layers"] == list(LAYERS) and record["scale"] == SCALE and record["layer_scales"] == LAYER_SCALES
    assert record["effective_scales"] == {"1": SCALE, "3": SCALE * 0.5}
    assert record["vector_units"] == "class_separation"
    assert (
        record["base_model"]
        == json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    )


def test_lora_export_is_a_rank_one_bias_only_adapter(exports, tmp_path):
    _, expected, _ = exports
    out = export_adapter(expected["llama"]["adapter"], "lora", tmp_path / "lora")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 1 and config["lora_alpha"] == 1 and config["lora_bias"]
    assert sorted(config["target_modules"]) == [f"model.layers.{layer}.mlp.down_proj" for layer in LAYERS]
    weights = load_file(out / "adapter_model.safetensors")
    vectors = random_vectors()
    for layer in LAYERS:
        prefix = f"base_model.model.model.layers.{layer}.mlp.down_proj"
        assert not weights[f"{prefix}.lora_A.weight"].any() and not weights[f"{prefix}.lora_B.weight"].any()
        factor = SCALE * float(LAYER_SCALES.get(str(layer), 1.0))
        torch.testing.assert_close(weights[f"{prefix}.lora_B.bias"], vectors[layer] * factor, atol=0, rtol=0)
    assert "Provenance" in (out / "README.md").read_text()


def test_merged_llama_switches_on_mlp_bias_with_zero_gate_and_up_biases(exports, tmp_path):
    _, expected, _ = exports
    out = export_adapter(expected["llama"]["adapter"], "merged", tmp_path / "merged")
    config = json.loads((out / "config.json").read_text())
    assert config["mlp_bias"] is True and config["steering_export"]["export_format"] == "merged"
    weights = load_file(out / "model.safetensors")
    for layer in range(4):
        for name in ("gate_proj", "up_proj"):
            assert not weights[f"model.layers.{layer}.mlp.{name}.bias"].any()
        down = weights[f"model.layers.{layer}.mlp.down_proj.bias"]
        assert down.any() == (layer in LAYERS)


@pytest.mark.parametrize("case", POST_NORM + MOE)
@pytest.mark.parametrize("export_format", ["lora", "merged"])
def test_architectures_where_a_bias_is_not_exact_are_refused(tmp_path, case, export_format):
    _, adapter_dir, _ = save_base_and_adapter(case, tmp_path)
    reason = "post_feedforward_layernorm" if case in POST_NORM else "mixture of experts"
    with pytest.raises(NotExpressibleError, match=reason):
        export_adapter(adapter_dir, export_format, tmp_path / export_format)
    assert not (tmp_path / export_format).exists()


@pytest.mark.parametrize("case", NO_BIAS)
def test_merged_is_refused_where_the_writer_has_no_bias(tmp_path, case):
    _, adapter_dir, _ = save_base_and_adapter(case, tmp_path)
    with pytest.raises(NotExpressibleError, match="--format lora"):
        export_adapter(adapter_dir, "merged", tmp_path / "merged")


@pytest.mark.parametrize("case", POST_NORM)
def test_a_bias_on_the_mlp_output_is_indeed_not_exact_after_a_post_norm(case):
    """Why the post-norm rows are refused: the shift on down_proj's bias is normalised, not added."""
    model, vectors, ids = tiny_base(case), random_vectors(), input_ids()
    reference = hook_reference(model, case, vectors, ids)
    blocks = model.get_submodule(blocks_path(case))
    for layer, vector in vectors.items():
        down = blocks[layer].mlp.down_proj
        down.bias = torch.nn.Parameter(vector * SCALE * float(LAYER_SCALES.get(str(layer), 1.0)))
    with torch.no_grad():
        naive = model(ids).logits
    assert (naive - reference).abs().max() > 1e-2


@pytest.mark.parametrize("export_format", ["lora", "merged", "gguf"])
def test_ablate_and_gated_adapters_are_refused_in_every_format(tmp_path, export_format):
    _, ablate_dir, _ = save_base_and_adapter("llama", tmp_path / "ablate", mode="ablate")
    with pytest.raises(NotExpressibleError, match="ablation"):
        export_adapter(ablate_dir, export_format, tmp_path / "out-ablate")
    model = tiny_base("llama")
    gated = adapter_from_vectors(
        model,
        random_vectors(),
        scale=SCALE,
        condition_layer=1,
        condition_threshold=0.0,
        condition=torch.ones(32),
    )
    gated.peft_config["default"].base_model_name_or_path = str(tmp_path / "ablate" / "base")
    save_adapter(gated, tmp_path / "gated")
    with pytest.raises(NotExpressibleError, match="condition-gated"):
        export_adapter(tmp_path / "gated", export_format, tmp_path / "out-gated")


def test_a_base_model_that_does_not_fit_is_named(tmp_path):
    _, adapter_dir, _ = save_base_and_adapter("llama", tmp_path / "a")
    other = tiny_base("qwen3")
    other.config.hidden_size = 48
    wide = type(other)(other.config)
    wide.save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="hidden_size=32 but the model has hidden_size=48"):
        export_adapter(adapter_dir, "lora", tmp_path / "lora", base_model=str(tmp_path / "wide"))


def test_cli_export_and_its_errors(tmp_path, capsys):
    _, adapter_dir, _ = save_base_and_adapter("gpt2", tmp_path / "gpt2")
    assert cli_main(["export", str(adapter_dir), "--format", "merged", "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file() and "wrote merged export" in capsys.readouterr().out
    _, gemma_dir, _ = save_base_and_adapter("gemma2", tmp_path / "gemma2")
    assert cli_main(["export", str(gemma_dir), "--format", "lora", "--out", str(tmp_path / "lora")]) == 2
    assert "post_feedforward_layernorm" in capsys.readouterr().err
