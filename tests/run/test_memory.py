"""The per-stage memory estimate of a recipe (against hand-counted formulas) and the preflight that fails before the
model is loaded, on synthetic configs (nothing large is ever allocated: parameters are counted on ``meta``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from transformers import LlamaConfig

from steering_adapter.cli import EXIT_OK, EXIT_USAGE, main
from steering_adapter.run.memory import (
    InsufficientMemoryError,
    check_recipe_memory,
    estimate_recipe_memory,
    parameter_count,
)
from steering_adapter.run.pipeline import run_recipe
from steering_adapter.run.recipe import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "no-political-refusal.yaml"
COUNTS = {"train": 320, "gating": 900, "neutral": 36}


def llama(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        tie_word_embeddings=False,
    )


def hand_counted_parameters(c: LlamaConfig) -> int:
    head_dim = c.hidden_size // c.num_attention_heads
    attention = (
        2 * c.hidden_size * c.num_attention_heads * head_dim + 2 * c.hidden_size * c.num_key_value_heads * head_dim
    )
    block = attention + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    return 2 * c.vocab_size * c.hidden_size + c.num_hidden_layers * block + c.hidden_size


def stage(estimate, name):
    return next(s for s in estimate.stages if s.stage == name)


def test_estimate_matches_the_formulas():
    config = llama()
    assert parameter_count(config) == hand_counted_parameters(config) == 8_030_261_248  # Llama-3-8B
    recipe = load_recipe(RECIPE)
    recipe.model = dataclasses.replace(recipe.model, name_or_path="synthetic", dtype="bfloat16", device="cuda")
    recipe.estimator.layers = list(range(8, 24))
    estimate = estimate_recipe_memory(recipe, config, prompt_counts=COUNTS, prompt_tokens=200)
    assert stage(estimate, "model weights").nbytes == 2 * 8_030_261_248
    assert stage(estimate, "model weights").where == "device" and stage(estimate, "model weights").resident
    d = 4096
    assert stage(estimate, "activation statistics").nbytes == 8 * 16 * (2 * d + d * d) + 4 * d * (d // 8)
    rows = recipe.sampling.batch_size * recipe.sampling.k
    kv = rows * (200 + recipe.sampling.max_new_tokens) * 32 * 2 * 8 * 128 * 2
    assert stage(estimate, "sampling (one batch)").nbytes == kv + rows * 128256 * 6
    assert stage(estimate, "diagnostics").nbytes == 320 * 16 * 8 + 320 * d * 4
    assert stage(estimate, "diagnostics").where == "host"
    assert stage(estimate, "KL base side (selection)").nbytes == 36 * recipe.selection.kl_tokens * 128256 * 4
    device = [s.nbytes for s in estimate.stages if s.where == "device" and not s.resident]
    assert estimate.peak("device") == 2 * 8_030_261_248 + max(device)
    md = dataclasses.replace(recipe, estimator=dataclasses.replace(recipe.estimator, method="md"))
    estimate_md = estimate_recipe_memory(md, config, prompt_counts=COUNTS)
    assert stage(estimate_md, "activation statistics").nbytes == 8 * 16 * 2 * d  # means only, no scratch
    assert "| **peak per process** | device |" in estimate.table()


def test_preflight_names_the_estimate_and_the_options():
    recipe = load_recipe(RECIPE)
    recipe.model = dataclasses.replace(recipe.model, name_or_path="synthetic")
    config = llama(hidden=8192, layers=80, heads=64, intermediate=28672)
    with pytest.raises(InsufficientMemoryError) as error:
        check_recipe_memory(recipe, config=config, free={"host": 64 * 2**30}, prompt_counts=COUNTS, log=print)
    message = str(error.value)
    assert "host: about" in message and "64.00 GiB free" in message
    assert "model weights (host)" in message and "model.dtype: bfloat16" in message
    assert "estimator.layers (each candidate block: 0.50 GiB)" in message and "estimator.method: md" in message
    lines = []
    fits = check_recipe_memory(
        recipe,
        config=llama(hidden=256, layers=4, heads=4, kv_heads=4, intermediate=512, vocab=1000),
        free={"host": 64 * 2**30},
        prompt_counts=COUNTS,
        log=lines.append,
    )
    assert fits is not None and lines[0].startswith("[memory] estimated peak per process: host")


def synthetic_model_folder(tmp_path: Path) -> Path:
    """A folder with only the config.json of a ~2-trillion-parameter Llama: loading it would fail, nothing fits."""
    folder = tmp_path / "huge-model"
    folder.mkdir()
    llama(hidden=16384, layers=640, heads=128, kv_heads=16, intermediate=53248).save_pretrained(folder)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    return folder


def test_run_fails_before_loading_the_model(tmp_path, capsys):
    folder = synthetic_model_folder(tmp_path)
    out = tmp_path / "run"
    code = main(["run", str(RECIPE), "--out", str(out), "--set", f"model.name_or_path={folder}", "--no-progress"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "needs more memory than is free" in err and "reduce with" in err and "model weights" in err
    assert not out.exists()  # failed before anything was loaded or written
    # without the check the same recipe gets as far as loading the (absent) weights
    recipe = load_recipe(RECIPE)
    recipe.model = dataclasses.replace(recipe.model, name_or_path=str(folder))
    recipe.output.dir = str(out)
    with pytest.raises(Exception) as error:
        run_recipe(recipe, progress=False, log=lambda message: None, memory_check=False)
    assert not isinstance(error.value, InsufficientMemoryError)


def test_memory_command_prints_the_estimate(tmp_path, capsys):
    config = tmp_path / "config"
    llama().save_pretrained(config)
    assert main(["memory", str(RECIPE), "--config", str(config), "--set", "model.dtype=bfloat16"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "| activation statistics |" in printed and "8.03 B params × 2 B (bfloat16)" in printed


def test_the_8b_recipe_numbers_in_the_readme():
    """The expected memory of Qwen3-8B in docs/scale.md and the recipe comes from these formulas (its config.json)."""
    from transformers import Qwen3Config

    config = Qwen3Config(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=False,
    )
    recipe = load_recipe(RECIPE.with_name("no-political-refusal-qwen3-8b.yaml"))
    estimate = estimate_recipe_memory(recipe, config, prompt_counts={"train": 616, "gating": 837, "neutral": 15})
    gib = {s.stage: round(s.nbytes / 2**30, 2) for s in estimate.stages}
    assert gib["model weights"] == 15.26 and gib["sampling (one batch)"] == 11.39
    assert gib["activation statistics"] == 4.51 and gib["fitting one direction"] == 0.5
    assert round(estimate.peak("device") / 2**30, 2) == 26.64
    mib = {s.stage: round(s.nbytes / 2**20) for s in estimate.stages}
    assert mib["condition (gating)"] == 235 and mib["KL base side (selection)"] == 139


def test_a_vllm_engine_reserves_its_share_of_the_gpu():
    recipe = load_recipe(RECIPE)
    recipe.model = dataclasses.replace(recipe.model, name_or_path="synthetic", dtype="bfloat16", device="cuda")
    recipe.sampling = dataclasses.replace(recipe.sampling, backend="vllm", engine_args={"gpu_memory_utilization": 0.5})
    estimate = estimate_recipe_memory(recipe, llama(), prompt_counts=COUNTS, gpu_total=80 * 2**30)
    engine = stage(estimate, "vLLM engine (sampling)")
    assert engine.nbytes == 40 * 2**30 and engine.resident and engine.where == "device"
    assert not any(s.stage == "sampling (one batch)" for s in estimate.stages)
    with pytest.raises(InsufficientMemoryError, match="gpu_memory_utilization"):
        check_recipe_memory(
            recipe, config=llama(), free={"device": 50 * 2**30}, prompt_counts=COUNTS, gpu_total=80 * 2**30
        )
