"""Large models on one node, as far as a CPU machine can test them:

- bf16 / fp16 models: statistics reduced in float32 match a float64 reduction of the same activations, and the
  directions stay within a stated tolerance of the float32 model's (measured on the organism);
- per-block devices: the steering plan and the gate follow the block a step runs on (``meta`` stands in for a second
  device: shapes and devices are checked, values cannot be);
- ``--dtype`` / ``--device`` / ``--device-map`` on the CLI, and a local transformers judge in the model's dtype.

What CPU cannot test: a real ``device_map="auto"`` model across GPUs (accelerate's hooks moving activations between
devices). The logic it relies on — statistics, plans and gates allocated on the device each block reports — is
tested here and in tests/directions/test_statistics.py with ``meta`` and mocked execution devices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from steering_adapter import SteeringConfig, adapter_from_vectors
from steering_adapter.cli import EXIT_OK, EXIT_USAGE, main
from steering_adapter.directions.collection import ActivationCollector
from steering_adapter.directions.estimators import MeanDifference, RidgeMeanDifference
from steering_adapter.directions.fitting import fit_directions
from steering_adapter.measure.sampling import sample_answers
from steering_adapter.models.organism import load_organism
from steering_adapter.models.organism.data import load_examples
from steering_adapter.run.recipe import JudgeSpec, ModelSpec
from steering_adapter.run.stages.load import build_judge
from steering_adapter.tuner.gate import GateState
from steering_adapter.tuner.layer import SteeringLayer, apply_plan

pytestmark = pytest.mark.usefixtures("single_thread")


def organism_prompts(n: int = 24) -> tuple[list[str], list[float]]:
    examples = [e for e in load_examples() if e.split == "train"]
    political = [e.prompt for e in examples if e.category == "political"][:n]
    benign = [e.prompt for e in examples if e.category == "benign"][:n]
    return political + benign, [0.8] * len(political) + [-0.8] * len(benign)


@pytest.fixture(scope="module")
def organism_statistics():
    prompts, scores = organism_prompts()
    result = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        model, tokenizer = load_organism(dtype=dtype)
        collector = ActivationCollector(model, tokenizer, batch_size=8, second_moments="compliance", progress=False)
        result[dtype] = collector.collect(prompts, scores=scores, keep_activations=True)
    return result


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_accumulate_in_float32_or_better(organism_statistics, dtype):
    collected = organism_statistics[dtype]
    assert collected.activations.dtype == torch.float32  # pooled activations are float32 whatever the model's dtype
    compliance = collected.keep & ~collected.is_refusal
    for layer in collected.layers:
        reference = np.cov(collected.layer_activations(layer)[compliance].double().numpy().T)
        covariance = collected.stats.covariance("compliance", layer).numpy()
        assert np.linalg.norm(covariance - reference) / np.linalg.norm(reference) <= 1e-6


# Tolerances measured on the organism (24 + 24 prompts, 6 blocks): bf16 vs float32 cosine ≥ 0.99998 (MD) and
# ≥ 0.9946 (RMD, relative λ = 0.1, which amplifies the bf16 weights' rounding in low-variance directions); fp16
# ≥ 0.99999 and ≥ 0.9998.
@pytest.mark.parametrize(
    "dtype,estimator,min_cosine",
    [
        (torch.bfloat16, MeanDifference(), 0.9999),
        (torch.bfloat16, RidgeMeanDifference(lambda_mode="relative"), 0.99),
        (torch.float16, MeanDifference(), 0.9999),
        (torch.float16, RidgeMeanDifference(lambda_mode="relative"), 0.999),
    ],
)
def test_half_precision_directions_stay_close_to_float32(organism_statistics, dtype, estimator, min_cosine):
    reference = fit_directions(estimator, organism_statistics[torch.float32].stats)
    half = fit_directions(estimator, organism_statistics[dtype].stats)
    for layer, vector in reference.items():
        assert float(torch.nn.functional.cosine_similarity(half[layer], vector, dim=0)) >= min_cosine, layer


def test_steering_plan_and_gate_follow_the_block_device():
    generator = torch.Generator().manual_seed(0)
    vectors = {2: torch.randn(64, generator=generator), 3: torch.randn(64, generator=generator)}
    config = SteeringConfig(layers=[2, 3], scale=-2.0, condition_layer=1, condition_threshold=0.0)
    model = adapter_from_vectors(tiny_model("llama"), vectors, config, condition=torch.randn(64, generator=generator))
    layers = {m.layer_index: m for m in model.modules() if isinstance(m, SteeringLayer)}
    # block 3 running on another device in bf16: its deltas are built there, in that dtype, from float32 vectors
    plan = layers[3].steering_plan(torch.bfloat16, torch.device("meta"))
    assert [(op, tensor.device.type, tensor.dtype) for op, tensor, _ in plan] == [("add", "meta", torch.bfloat16)]
    assert layers[3].steering_vector["default"].dtype == torch.float32
    # the gate is decided on the condition block's device (CPU here) and applied where the steered block runs
    gate = plan[0][2]
    assert isinstance(gate, GateState)
    gate.gate = torch.tensor([True, False])
    steered = apply_plan(torch.zeros(2, 5, 64, dtype=torch.bfloat16, device="meta"), plan)
    assert steered.device.type == "meta" and steered.dtype == torch.bfloat16 and steered.shape == (2, 5, 64)
    cpu_plan = layers[3].steering_plan(torch.float32, torch.device("cpu"))
    hidden = torch.zeros(2, 5, 64)
    out = apply_plan(hidden, cpu_plan)
    torch.testing.assert_close(out[0], (-2.0 * vectors[3]).expand(5, 64))
    assert torch.equal(out[1], hidden[1])


def test_cli_dtype_and_device_options(capsys):
    prompt = "What is the capital of France?"
    assert (
        main(
            [
                "generate",
                "--model",
                "organism",
                "--dtype",
                "bfloat16",
                "--device",
                "cpu",
                "--prompt",
                prompt,
                "--max-new-tokens",
                "8",
            ]
        )
        == EXIT_OK
    )
    printed = capsys.readouterr().out
    model, tokenizer = load_organism(dtype=torch.bfloat16)
    expected = sample_answers(model, tokenizer, [prompt], k=1, max_new_tokens=8, temperature=0.0, progress=False)
    assert f"[model] {expected[0].answers[0].text}" in printed
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", "organism", "--device", "cpu", "--device-map", "auto", "--prompt", prompt])
    assert exit_info.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_transformers_judge_in_the_models_dtype(tmp_path):
    folder = tmp_path / "judge"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    judge = build_judge(JudgeSpec(kind="transformers", model=str(folder)), ModelSpec(dtype="bfloat16", device="cpu"))
    assert judge.backend.model.dtype == torch.bfloat16
    assert next(judge.backend.model.parameters()).device.type == "cpu"
    assert build_judge(JudgeSpec(kind="transformers", model=str(folder))).backend.model.dtype == torch.float32
