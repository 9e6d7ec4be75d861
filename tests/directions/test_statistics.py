"""The memory model of the statistics: the bytes formula, the float32-per-batch error bound, pooled second moments,
what each estimator collects, per-block devices, and storage formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS, tiny_model, tiny_tokenizer

from steering_adapter.directions.collection import ActivationCollector, collect_activations
from steering_adapter.directions.estimators import MeanDifference, RidgeMeanDifference, WeightedRidgeMeanDifference
from steering_adapter.directions.moments import StatisticsSpec, scratch_nbytes, statistics_nbytes
from steering_adapter.directions.statistics import ActivationStatistics
from steering_adapter.tuner.blocks import block_device

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = [*HARMLESS_PROMPTS, *SENSITIVE_PROMPTS]
SCORES = np.linspace(-0.95, 0.95, len(PROMPTS))


def numpy_pooled(x_r: np.ndarray, w_r: np.ndarray, x_c: np.ndarray, w_c: np.ndarray) -> np.ndarray:
    """Pooled within-class covariance with reliability weights, written from the definition."""
    scatter, dof = 0.0, 0.0
    for x, w in ((x_r, w_r), (x_c, w_c)):
        centred = x - np.average(x, axis=0, weights=w)
        scatter = scatter + (centred * w[:, None]).T @ centred
        dof += w.sum() - (w**2).sum() / w.sum()
    return scatter / dof


# ------------------------------------------------------------------------------------------------ the formula


@pytest.mark.parametrize("second_moments,k", [("none", 0), ("compliance", 1), ("pooled", 1), ("both", 2)])
def test_nbytes_is_the_documented_formula(second_moments, k):
    stats = ActivationStatistics(layers=[1, 4, 6], hidden_size=24, second_moments=second_moments)
    assert stats.nbytes == 8 * 3 * (2 * 24 + k * 24 * 24) == statistics_nbytes(3, 24, second_moments)
    assert scratch_nbytes(24, second_moments) == (0 if k == 0 else 4 * 24 * 3)  # ⌈24 / 8⌉ rows
    # independent of the number of samples
    stats.update(torch.randn(50, 3, 24), torch.arange(50) % 2 == 0)
    assert stats.nbytes == statistics_nbytes(3, 24, second_moments)


@pytest.mark.parametrize(
    "d,blocks,all_rmd_gib,band_rmd_gib,all_md_mib",
    [(4096, 36, 4.5, 2.0, 2.3), (8192, 80, 40.0, 8.0, 10.0), (2048, 48, 1.5, 0.5, 1.5)],
)
def test_the_readme_example_numbers(d, blocks, all_rmd_gib, band_rmd_gib, all_md_mib):
    assert statistics_nbytes(blocks, d, "compliance") / 2**30 == pytest.approx(all_rmd_gib, abs=0.01)
    assert statistics_nbytes(16, d, "compliance") / 2**30 == pytest.approx(band_rmd_gib, abs=0.01)
    assert statistics_nbytes(blocks, d, "none") / 2**20 == pytest.approx(all_md_mib, abs=0.05)


# ----------------------------------------------------------------------------------------- float32 batches


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_batches_with_a_float64_merge_stay_within_the_bound(dtype):
    """Activations with a common offset 1000× their spread (LLM "massive activations"), fed in batches of 8."""
    generator = torch.Generator().manual_seed(0)
    n, d = 480, 64
    offset = 1000.0 * (1 + torch.rand(d, generator=generator))
    x = (torch.randn(n, 1, d, generator=generator, dtype=torch.float64) * 1.5 + offset).to(dtype)
    weights = torch.rand(n, generator=generator, dtype=torch.float64) + 0.1
    stats = ActivationStatistics(layers=[0], hidden_size=d, second_moments="compliance")
    for start in range(0, n, 8):
        stats.update(x[start : start + 8], torch.zeros(8, dtype=torch.bool), weights[start : start + 8])
    reference = np.cov(x[:, 0].double().numpy().T, aweights=weights.numpy())  # float64 on the same values
    mean = np.average(x[:, 0].double().numpy(), axis=0, weights=weights.numpy())
    covariance = stats.covariance("compliance", 0).numpy()
    relative = np.linalg.norm(covariance - reference) / np.linalg.norm(reference)
    assert relative <= 1e-5, relative
    np.testing.assert_allclose(stats.mean("compliance", 0).numpy(), mean, rtol=1e-12)
    # the plain float32 sum of outer products on the same data loses every digit of the covariance
    x32 = x[:, 0].float()
    naive = ((x32 * weights.float()[:, None]).T @ x32).double().numpy() - weights.sum().item() * np.outer(mean, mean)
    naive /= weights.sum().item() - (weights**2).sum().item() / weights.sum().item()
    assert np.linalg.norm(naive - reference) / np.linalg.norm(reference) > 1e-2


def test_float64_input_is_reduced_in_float64():
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.normal(size=(40, 2, 8)) + 50.0)
    stats = ActivationStatistics(layers=[0, 1], hidden_size=8, second_moments="both")
    for start in range(0, 40, 7):
        stats.update(x[start : start + 7], np.arange(start, min(start + 7, 40)) % 3 == 0)
    side = np.arange(40) % 3 == 0
    for position in (0, 1):
        np.testing.assert_allclose(
            stats.covariance("refusal", position).numpy(), np.cov(x[side, position].numpy().T), rtol=1e-11, atol=1e-12
        )


# ------------------------------------------------------------------------------------------ pooled moments


def test_pooled_covariance_matches_numpy_and_both():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(70, 2, 6)) * 2 + 3)
    side = rng.uniform(size=70) > 0.4
    w = rng.uniform(0.2, 2.0, size=70)
    pooled = ActivationStatistics(layers=[2, 9], hidden_size=6, second_moments="pooled")
    both = ActivationStatistics(layers=[2, 9], hidden_size=6, second_moments="both")
    for stats in (pooled, both):
        stats.update(x[:30], side[:30], w[:30])
        stats.update(x[30:], side[30:], w[30:])
    for position, layer in enumerate((2, 9)):
        xs = x[:, position].numpy()
        expected = numpy_pooled(xs[side], w[side], xs[~side], w[~side])
        np.testing.assert_allclose(pooled.pooled_covariance(layer).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(both.pooled_covariance(layer).numpy(), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="no second moments for the compliance class"):
        pooled.covariance("compliance", 2)
    with pytest.raises(ValueError, match="no pooled second moments"):
        ActivationStatistics(layers=[0], hidden_size=6, second_moments="compliance").pooled_covariance(0)


def test_pooled_rmd_matches_the_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 10)) + np.where(np.arange(80) < 40, 1.0, -1.0)[:, None] * rng.normal(size=10)
    y = np.arange(80) < 40
    lam = 0.3
    sigma = numpy_pooled(x[y], np.ones(40), x[~y], np.ones(40))
    np.testing.assert_allclose(  # unit weights: ((n_r - 1) S_r + (n_c - 1) S_c) / (n - 2)
        sigma, (39 * np.cov(x[y].T) + 39 * np.cov(x[~y].T)) / 78, rtol=1e-12
    )
    expected = np.linalg.solve(sigma + lam * np.eye(10), x[y].mean(0) - x[~y].mean(0))
    direct = RidgeMeanDifference(ridge_lambda=lam, covariance="pooled").fit(x, y).direction_
    stats = ActivationStatistics(layers=[0], hidden_size=10, second_moments="pooled")
    stats.update(torch.as_tensor(x), y)
    streamed = RidgeMeanDifference(ridge_lambda=lam, covariance="pooled").fit_statistics(stats).direction_
    np.testing.assert_allclose(direct.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(streamed.numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown covariance"):
        RidgeMeanDifference(covariance="total").fit(x, y)


# --------------------------------------------------------------------------------- what each estimator keeps


@pytest.mark.parametrize(
    "estimator,spec",
    [
        (MeanDifference(), StatisticsSpec("none", "none")),
        (RidgeMeanDifference(), StatisticsSpec("none", "compliance")),
        (RidgeMeanDifference(covariance="pooled"), StatisticsSpec("none", "pooled")),
        (WeightedRidgeMeanDifference(), StatisticsSpec("confidence", "compliance")),
    ],
)
def test_collector_keeps_only_what_the_estimator_declares(estimator, spec):
    assert estimator.required_statistics() == spec
    tokenizer, model = tiny_tokenizer(), tiny_model("llama")
    result = collect_activations(
        model, tokenizer, PROMPTS, layers=[0, 2], scores=SCORES, estimator=estimator, progress=False
    )
    kept = result.weighted_stats if spec.weighting == "confidence" else result.stats
    other = result.stats if spec.weighting == "confidence" else result.weighted_stats
    assert other is None  # WRMD builds one statistics object, not two
    assert result.activations is None  # nothing raw unless asked
    assert kept.second_moments == spec.second_moments and kept.weighting == spec.weighting
    assert kept.nbytes == statistics_nbytes(2, model.config.hidden_size, spec.second_moments)
    # the directions equal those fitted on raw activations (kept in a separate collection)
    raw = collect_activations(model, tokenizer, PROMPTS, layers=[0, 2], keep_activations=True, progress=False)
    for layer in (0, 2):
        streamed = type(estimator)(**estimator.get_params()).fit_statistics(kept, layer).direction_
        direct = type(estimator)(**estimator.get_params()).fit(raw.layer_activations(layer), scores=SCORES)
        torch.testing.assert_close(streamed, direct.direction_, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="either an estimator"):
        collect_activations(model, tokenizer, PROMPTS, scores=SCORES, estimator=estimator, weighting="both")


# ---------------------------------------------------------------------------------------- per-block devices


def test_statistics_follow_a_device_per_block():
    x = torch.randn(12, 2, 5, dtype=torch.float64)
    side = torch.arange(12) % 2 == 0
    stats = ActivationStatistics(layers=[3, 7], hidden_size=5, device={3: "cpu", 7: "meta"})
    assert stats.layer_device(3).type == "cpu" and stats.layer_device(7).type == "meta"
    stats.update({3: x[:, 0], 7: x[:, 1].to("meta")}, side)  # each block's activations where the block lives
    assert stats.mean("refusal", 7).device.type == "meta"
    assert stats.covariance("compliance", 7).device.type == "meta"
    np.testing.assert_allclose(stats.covariance("compliance", 3).numpy(), np.cov(x[~side, 0].numpy().T), rtol=1e-12)
    merged = stats.merge(stats)
    assert merged.layer_device(7).type == "meta" and merged.count("refusal") == 12
    with pytest.raises(ValueError, match="not blocks \\[7\\]"):
        ActivationStatistics(layers=[3, 7], hidden_size=5, device={3: "cpu"})
    with pytest.raises(ValueError, match="expected \\[3, 7\\]"):
        stats.update({3: x[:, 0]}, side)


def test_block_device_reads_accelerate_execution_devices():
    block = torch.nn.Linear(2, 2)
    assert block_device(block) == torch.device("cpu")
    block.to("meta")
    assert block_device(block) == torch.device("cpu")  # offloaded without a hook: computed on CPU
    block._hf_hook = type("AlignDevicesHook", (), {"execution_device": 1})()
    assert block_device(block) == torch.device("cuda", 1)
    block._hf_hook.execution_device = "cuda:0"
    assert block_device(block) == torch.device("cuda", 0)


def test_collector_accumulates_each_block_on_its_device(monkeypatch):
    """A model whose block 2 'computes' elsewhere: its sums live there, the others stay exact on CPU."""
    tokenizer, model = tiny_tokenizer(), tiny_model("llama")
    collector = ActivationCollector(model, tokenizer, [0, 2], second_moments="compliance", progress=False)
    expected = collector.collect(PROMPTS, scores=SCORES).stats
    monkeypatch.setattr(
        "steering_adapter.directions.collection.block_device",
        lambda block: torch.device("meta") if block is model.model.layers[2] else torch.device("cpu"),
    )
    assert collector.block_devices() == {0: torch.device("cpu"), 2: torch.device("meta")}
    stats = collector.collect(PROMPTS, scores=SCORES).stats
    assert stats.layer_device(2).type == "meta" and stats.layer_device(0).type == "cpu"
    assert torch.equal(stats.covariance("compliance", 0), expected.covariance("compliance", 0))
    assert ActivationCollector(model, tokenizer, [0, 2], stats_device="cpu").block_devices()[2].type == "cpu"


# ------------------------------------------------------------------------------------------------- storage


def test_format_1_files_still_load(tmp_path):
    rng = np.random.default_rng(4)
    stats = ActivationStatistics(layers=[1, 5], hidden_size=4, second_moments="compliance", metadata={"m": 1})
    stats.update(torch.as_tensor(rng.normal(size=(9, 2, 4))), np.arange(9) % 2 == 0)
    path = stats.save(tmp_path / "new")
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["format_version"] == 2
    # the same sums written as format 1 did: stacked over blocks
    old = {
        "refusal.sum": torch.stack([stats._moments["refusal"].sums[i] for i in range(2)]),
        "compliance.sum": torch.stack([stats._moments["compliance"].sums[i] for i in range(2)]),
        "compliance.outer": torch.stack([stats._moments["compliance"].outers[i] for i in range(2)]),
    }
    save_file(old, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(json.dumps({**info, "format_version": 1, "tensors": "old.safetensors"}))
    for source in (path, tmp_path / "old.safetensors"):
        loaded = ActivationStatistics.load(source)
        assert torch.equal(loaded.covariance("compliance", 5), stats.covariance("compliance", 5))
        assert torch.equal(loaded.mean("refusal", 1), stats.mean("refusal", 1))
