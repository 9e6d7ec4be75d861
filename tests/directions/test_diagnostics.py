"""Per-layer diagnostics against independent sklearn / numpy computations, files, and a tiny-model run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from sklearn.metrics import roc_auc_score
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS, tiny_model, tiny_tokenizer

from steering_adapter.directions.collection import ActivationCollector, collect_activations
from steering_adapter.directions.diagnostics import DirectionDiagnostics, diagnose_directions, diagnose_from_model
from steering_adapter.directions.direction_metrics import direction_dimensionality
from steering_adapter.directions.estimators import MeanDifference
from steering_adapter.directions.fitting import fit_directions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("single_thread")


def synthetic(seed: int = 0, n: int = 120, layers: int = 4, d: int = 16):
    """Activations whose refusal signal along a fixed unit u grows with depth, scores tied to it."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    scores = rng.uniform(-1, 1, size=n)
    strength = np.linspace(0.0, 3.0, layers)
    acts = rng.normal(size=(n, layers, d)) + strength[None, :, None] * scores[:, None, None] * u
    return acts, scores, u


def brute_force_coords(v: np.ndarray, coverage: float) -> int:
    squares = sorted((x * x for x in v), reverse=True)
    total, running = sum(squares), 0.0
    for count, value in enumerate(squares, start=1):
        running += value
        if running >= coverage * total - 1e-12 * total:
            return count
    return len(squares)


def test_values_match_sklearn_and_numpy():
    acts, scores, _ = synthetic()
    labels = scores > 0.1
    keep = (scores > 0.1) | (scores < -0.1)
    rng = np.random.default_rng(5)
    directions = {layer: rng.normal(size=16) * (layer + 1) for layer in range(4)}
    diag = diagnose_directions(acts, directions, scores=scores)
    assert [entry.layer for entry in diag.layers] == [0, 1, 2, 3]
    for entry in diag.layers:
        v = directions[entry.layer]
        projection = acts[:, entry.layer] @ (v / np.linalg.norm(v))
        np.testing.assert_allclose(diag.projections[:, entry.layer], projection, rtol=1e-12)
        assert entry.auc == pytest.approx(roc_auc_score(labels[keep], projection[keep]), abs=1e-12)
        assert entry.pearson_r == pytest.approx(np.corrcoef(projection, scores)[0, 1], abs=1e-12)
        assert entry.norm == pytest.approx(np.linalg.norm(v), rel=1e-12)
        assert entry.coords_90 == brute_force_coords(v, 0.9)
        assert entry.coords_90_fraction == pytest.approx(entry.coords_90 / 16)
        assert entry.participation_ratio == pytest.approx((v**2).sum() ** 2 / (v**4).sum(), rel=1e-12)
        assert entry.mean_projection_refusal == pytest.approx(projection[keep & labels].mean())
        assert entry.mean_projection_compliance == pytest.approx(projection[keep & ~labels].mean())


def test_planted_signal_ranks_deep_layers_first():
    acts, scores, u = synthetic()
    directions = {layer: u.copy() for layer in range(4)}
    diag = diagnose_directions(torch.as_tensor(acts), directions, scores=scores)
    assert diag.best_layers() == [3, 2, 1, 0]
    assert diag.best_layers(2) == [3, 2]
    assert diag.layer(3).auc > 0.95 and abs(diag.layer(0).pearson_r) < 0.3
    # unscored (NaN) prompts are left out of r and of the AUC
    holes = scores.copy()
    holes[:10] = np.nan
    partial = diagnose_directions(acts, directions, scores=holes)
    projection = acts[10:, 3] @ u
    assert partial.layer(3).pearson_r == pytest.approx(np.corrcoef(projection, scores[10:])[0, 1], abs=1e-12)
    keep = np.abs(scores[10:]) > 0.1
    expected_auc = roc_auc_score(scores[10:][keep] > 0.1, projection[keep])
    assert partial.layer(3).auc == pytest.approx(expected_auc, abs=1e-12)
    # explicit labels, no scores: no r, ranking by AUC
    by_auc = diagnose_directions(acts, np.stack([u] * 4), labels=scores > 0)
    assert all(entry.pearson_r is None for entry in by_auc.layers)
    assert by_auc.best_layers(1) == [3]
    assert by_auc.layer(3).auc == pytest.approx(roc_auc_score(scores > 0, acts[:, 3] @ u), abs=1e-12)


def test_best_layers_ranks_by_abs_r_then_auc():
    acts, scores, u = synthetic()
    diag = diagnose_directions(acts, {layer: u for layer in range(4)}, scores=scores)
    diag.layers[0].pearson_r, diag.layers[0].auc = -0.9, 0.1  # strong negative r beats the rest
    diag.layers[1].pearson_r, diag.layers[1].auc = 0.5, 0.7
    diag.layers[2].pearson_r, diag.layers[2].auc = 0.5, 0.8  # tie on |r|: higher AUC first
    diag.layers[3].pearson_r, diag.layers[3].auc = None, 0.99  # no r: after those with one
    assert diag.best_layers() == [0, 2, 1, 3]


def test_dimensionality_extremes():
    one_hot = np.zeros(50)
    one_hot[7] = -3.0
    assert direction_dimensionality(one_hot) == (1, 1.0)
    uniform = np.ones(50)
    coords, ratio = direction_dimensionality(uniform)
    assert coords == math.ceil(0.9 * 50) and ratio == pytest.approx(50)
    assert direction_dimensionality(uniform, coverage=1.0)[0] == 50
    rng = np.random.default_rng(2)
    for _ in range(5):
        v = rng.standard_t(df=2, size=64)
        assert direction_dimensionality(v, 0.75)[0] == brute_force_coords(v, 0.75)


def test_json_and_png_files(tmp_path):
    acts, scores, u = synthetic()
    diag = diagnose_directions(acts, {layer: u for layer in range(4)}, scores=scores)
    written = diag.save(tmp_path)
    assert set(written) == {"json", "separability", "norm", "pca"}
    data = json.loads((tmp_path / "diagnostics.json").read_text())
    assert data["best_layers"] == diag.best_layers()
    assert [entry["layer"] for entry in data["layers"]] == [0, 1, 2, 3]
    assert data["layers"][3]["auc"] == diag.layer(3).auc
    assert np.asarray(data["projections"]).shape == (120, 4)
    assert data["pca"]["layer"] == 3 and np.asarray(data["pca"]["coords"]).shape == (int(diag.keep.sum()), 2)
    for name in ("separability.png", "direction_norm.png", "pca_best_layer.png"):
        path = tmp_path / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    loaded = DirectionDiagnostics.load(tmp_path)
    assert loaded.layers == diag.layers and loaded.best_layers() == diag.best_layers()
    np.testing.assert_allclose(loaded.projections, diag.projections)


def test_pca_coordinates_match_sklearn():
    from sklearn.decomposition import PCA

    acts, scores, u = synthetic()
    diag = diagnose_directions(acts, {layer: u for layer in range(4)}, scores=scores)
    keep = (scores > 0.1) | (scores < -0.1)
    expected = PCA(n_components=2).fit_transform(acts[keep, 3])
    # components are defined up to sign
    for k in range(2):
        sign = np.sign(expected[:, k] @ diag.pca_coords[:, k])
        np.testing.assert_allclose(diag.pca_coords[:, k], sign * expected[:, k], atol=1e-10)
    assert diag.pca_is_refusal.tolist() == (scores[keep] > 0.1).tolist()


def test_direction_only_diagnostics_and_errors():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 8))
    diag = diagnose_directions(None, directions, layers=[4, 6, 9])
    assert [e.layer for e in diag.layers] == [4, 6, 9] and diag.layer(6).auc is None
    assert diag.layer(4).norm == pytest.approx(np.linalg.norm(directions[0]))
    with pytest.raises(ValueError, match="must have shape"):
        diagnose_directions(rng.normal(size=(5, 2, 8)), directions, layers=[4, 6, 9])
    with pytest.raises(ValueError, match="are zero"):
        diagnose_directions(None, np.zeros((1, 8)))
    with pytest.raises(ValueError, match="2 layers given for 3 directions"):
        diagnose_directions(None, directions, layers=[0, 1])
    with pytest.raises(ValueError, match="no direction for layers"):
        diagnose_directions(None, {0: directions[0]}, layers=[0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        diagnose_directions(np.full((4, 3, 8), np.nan), directions, labels=[True, False, True, False])
    with pytest.raises(ValueError, match="not diagnosed"):
        diag.layer(5)


def test_tiny_model_end_to_end(tmp_path):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    prompts = SENSITIVE_PROMPTS + HARMLESS_PROMPTS
    labels = np.array([True] * len(SENSITIVE_PROMPTS) + [False] * len(HARMLESS_PROMPTS))
    result = collect_activations(
        model, tokenizer, prompts, labels=labels, keep_activations=True, batch_size=4, progress=False
    )
    directions = fit_directions(MeanDifference(), result.stats)
    diag = diagnose_directions(result.activations, directions, layers=result.layers, labels=labels)
    for entry in diag.layers:
        v = directions[entry.layer].double().numpy()
        projection = result.layer_activations(entry.layer).double().numpy() @ (v / np.linalg.norm(v))
        assert entry.auc == pytest.approx(roc_auc_score(labels, projection), abs=1e-9)
        # in-sample, the mean-difference projection separates the class means
        assert entry.mean_projection_refusal > entry.mean_projection_compliance
    written = diag.save(tmp_path / "diag")
    assert written["json"].exists() and written["pca"].exists()
    assert set(diag.save(tmp_path / "json_only", plots=False)) == {"json"}


@pytest.mark.parametrize("position", ["last", "mean"])
def test_streamed_diagnostics_equal_the_activation_based_ones(tmp_path, position):
    """diagnose_from_model (projections and one block's activations streamed from the model) gives the same
    diagnostics.json content and plots as diagnose_directions on kept activations."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    prompts = SENSITIVE_PROMPTS + HARMLESS_PROMPTS + ["Hi", "Tell me about the weather on a long trip."]
    scores = np.linspace(0.9, -0.9, len(prompts))
    scores[3] = 0.0  # neutral: no class, still in Pearson r
    scores[5] = np.nan  # unscored
    collector = ActivationCollector(model, tokenizer, [0, 1, 3], position=position, batch_size=3, progress=False)
    kept = collector.collect(prompts, scores=scores, keep_activations=True)
    directions = fit_directions(MeanDifference(), kept.stats)
    old = diagnose_directions(kept.activations, directions, layers=kept.layers, scores=scores).to_dict()
    new = diagnose_from_model(collector, prompts, directions, scores=scores).to_dict()
    assert new["best_layers"] == old["best_layers"] and new["pca"]["layer"] == old["pca"]["layer"]
    assert new["is_refusal"] == old["is_refusal"] and new["keep"] == old["keep"]
    np.testing.assert_allclose(new["projections"], old["projections"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new["pca"]["coords"], old["pca"]["coords"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        new["pca"]["explained_variance_ratio"], old["pca"]["explained_variance_ratio"], rtol=1e-6
    )
    for mine, theirs in zip(new["layers"], old["layers"], strict=True):
        for field, value in theirs.items():
            assert mine[field] == (pytest.approx(value, rel=1e-6, abs=1e-9) if value is not None else None), field
    diagnostics = diagnose_from_model(collector, prompts, directions, scores=scores)
    assert set(diagnostics.save(tmp_path)) == {"json", "separability", "norm", "pca"}
    loaded = DirectionDiagnostics.load(tmp_path)  # the NaN score is written as null and read back as NaN
    assert np.isnan(loaded.scores[5]) and loaded.best_layers() == diagnostics.best_layers()
