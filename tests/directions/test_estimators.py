"""MD / RMD / WRMD against independent numpy closed forms, planted directions, and error cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from steering_adapter.directions.estimators import (
    MeanDifference,
    RidgeMeanDifference,
    WeightedRidgeMeanDifference,
    make_estimator,
)
from steering_adapter.directions.fitting import compute_direction, fit_directions
from steering_adapter.directions.linear_algebra import mix_directions
from steering_adapter.directions.statistics import ActivationStatistics

EPS = 0.01


# ------------------------------------------------------------------------------------------ numpy references


def np_weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w[:, None] * x).sum(0) / w.sum()


def np_weighted_cov(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    mu = np_weighted_mean(x, w)
    centred = x - mu
    scatter = np.einsum("n,ni,nj->ij", w, centred, centred)
    return scatter / (w.sum() - (w**2).sum() / w.sum())


def np_rmd(xr, xc, lam, wr=None, wc=None, relative=False):
    wr = np.ones(len(xr)) if wr is None else wr
    wc = np.ones(len(xc)) if wc is None else wc
    cov = np_weighted_cov(xc, wc)
    if relative:
        lam = lam * np.trace(cov) / cov.shape[0]
    return np.linalg.solve(cov + lam * np.eye(cov.shape[0]), np_weighted_mean(xr, wr) - np_weighted_mean(xc, wc))


def cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    d = 12
    xr = rng.normal(size=(30, d)) + 1.5
    xc = rng.normal(size=(40, d)) @ rng.normal(size=(d, d)) * 0.5
    scores_r = rng.uniform(0.15, 1.0, size=30)
    scores_c = rng.uniform(-1.0, -0.15, size=40)
    X = np.concatenate([xr, xc])
    y = np.concatenate([np.ones(30, bool), np.zeros(40, bool)])
    scores = np.concatenate([scores_r, scores_c])
    return X, y, scores, xr, xc, scores_r, scores_c


# ------------------------------------------------------------------------------------------ closed forms


def test_md_matches_numpy(data):
    X, y, _, xr, xc, _, _ = data
    est = MeanDifference().fit(X, y)
    assert est.direction_.dtype == torch.float32 and est.direction_.shape == (X.shape[1],)
    np.testing.assert_allclose(est.direction_.numpy(), xr.mean(0) - xc.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.mean_refusal_.numpy(), xr.mean(0), rtol=1e-12)
    np.testing.assert_allclose(est.mean_compliance_.numpy(), xc.mean(0), rtol=1e-12)
    assert (est.n_refusal_, est.n_compliance_, est.lambda_, est.n_features_in_) == (30, 40, 0.0, 12)


@pytest.mark.parametrize("lam", [0.1, 2.0])
def test_rmd_matches_numpy(data, lam):
    X, y, _, xr, xc, _, _ = data
    est = RidgeMeanDifference(ridge_lambda=lam).fit(torch.as_tensor(X, dtype=torch.float32).double(), y)
    np.testing.assert_allclose(est.direction_.numpy(), np_rmd(xr, xc, lam), rtol=1e-5, atol=1e-6)
    assert est.lambda_ == lam


def test_rmd_relative_lambda_matches_numpy(data):
    X, y, _, xr, xc, _, _ = data
    est = RidgeMeanDifference(ridge_lambda=0.3, lambda_mode="relative").fit(X, y)
    cov = np.cov(xc.T)
    assert est.lambda_ == pytest.approx(0.3 * np.trace(cov) / cov.shape[0], rel=1e-12)
    np.testing.assert_allclose(est.direction_.numpy(), np_rmd(xr, xc, 0.3, relative=True), rtol=1e-5, atol=1e-6)


def test_covariance_is_compliance_only(data):
    """Σ_c comes from the compliance side: changing refusal spread (not its mean) leaves RMD unchanged."""
    X, y, _, xr, xc, _, _ = data
    spread = xr.copy()
    spread = spread.mean(0) + 5 * (spread - spread.mean(0))
    a = RidgeMeanDifference().fit(np.concatenate([xr, xc]), y).direction_
    b = RidgeMeanDifference().fit(np.concatenate([spread, xc]), y).direction_
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_wrmd_matches_numpy(data):
    X, _, scores, xr, xc, scores_r, scores_c = data
    est = WeightedRidgeMeanDifference(ridge_lambda=0.2, epsilon=EPS).fit(X, scores)
    wr, wc = np.maximum(scores_r, EPS), np.maximum(-scores_c, EPS)
    np.testing.assert_allclose(est.direction_.numpy(), np_rmd(xr, xc, 0.2, wr, wc), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.mean_refusal_.numpy(), np.average(xr, axis=0, weights=wr), rtol=1e-12)
    # same thing with explicit labels and scores= (labels from y, weights from scores)
    y = np.concatenate([np.ones(len(xr), bool), np.zeros(len(xc), bool)])
    other = WeightedRidgeMeanDifference(ridge_lambda=0.2, epsilon=EPS).fit(X, y, scores=scores)
    torch.testing.assert_close(other.direction_, est.direction_)


def test_wrmd_with_sample_weight_and_confidence_floor(data):
    X, y, scores, xr, xc, scores_r, scores_c = data
    scores = scores.copy()
    scores[:5] = -0.5  # labelled refusal by y, but the judge disagrees: weight = max(-0.5, eps) = eps
    sw = np.linspace(0.5, 2.0, len(X))
    est = WeightedRidgeMeanDifference(epsilon=EPS).fit(X, y, scores=scores, sample_weight=sw)
    wr = np.maximum(scores[:30], EPS) * sw[:30]
    wc = np.maximum(-scores[30:], EPS) * sw[30:]
    np.testing.assert_allclose(est.direction_.numpy(), np_rmd(xr, xc, 0.1, wr, wc), rtol=1e-5, atol=1e-6)


def test_scores_as_labels_drop_neutral(data):
    X, y, scores, xr, xc, _, _ = data
    scores = scores.copy()
    scores[[0, 1, 35]] = [0.05, -0.1, 0.1]  # neutral (thresholds are strict)
    keep = np.ones(len(X), bool)
    keep[[0, 1, 35]] = False
    scores[1] = np.nan  # unscored counts as neutral
    by_scores = RidgeMeanDifference().fit(X, scores)
    by_subset = RidgeMeanDifference().fit(X[keep], y[keep])
    torch.testing.assert_close(by_scores.direction_, by_subset.direction_)
    assert (by_scores.n_refusal_, by_scores.n_compliance_) == (28, 39)
    # scores= is the same as float y; custom thresholds move the split
    torch.testing.assert_close(RidgeMeanDifference().fit(X, scores=scores).direction_, by_scores.direction_)
    wide = MeanDifference(refusal_threshold=0.5, compliance_threshold=-0.5).fit(X, scores)
    assert wide.n_refusal_ == int((scores > 0.5).sum()) and wide.n_compliance_ == int((scores < -0.5).sum())


def test_compute_direction_matches_estimators(data):
    X, y, scores, xr, xc, scores_r, scores_c = data
    md = compute_direction(xr, xc, method="md")
    torch.testing.assert_close(md, MeanDifference().fit(X, y).direction_)
    rmd = compute_direction(torch.as_tensor(xr), torch.as_tensor(xc), method="rmd", ridge_lambda=0.5)
    np.testing.assert_allclose(rmd.numpy(), np_rmd(xr, xc, 0.5), rtol=1e-5, atol=1e-6)
    wr, wc = np.maximum(scores_r, EPS), np.maximum(-scores_c, EPS)
    wrmd = compute_direction(xr, xc, method="wrmd", refusal_weights=wr, compliant_weights=wc)
    torch.testing.assert_close(wrmd, WeightedRidgeMeanDifference(epsilon=EPS).fit(X, scores).direction_)
    assert wrmd.dtype == torch.float32 and wrmd.shape == (xr.shape[1],)
    relative = compute_direction(xr, xc, method="RMD", lambda_mode="relative")
    np.testing.assert_allclose(relative.numpy(), np_rmd(xr, xc, 0.1, relative=True), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ separation units


def np_separation(v: np.ndarray, mean_r: np.ndarray, mean_c: np.ndarray) -> np.ndarray:
    """s·u with u = v/‖v‖ and s = u·(μ_r − μ_c), written out in numpy."""
    u = v / np.linalg.norm(v)
    return float(u @ (mean_r - mean_c)) * u


@pytest.mark.parametrize("method", ["md", "rmd", "wrmd"])
def test_separation_units_closed_form(data, method):
    X, _, scores, xr, xc, scores_r, scores_c = data
    wr = np.maximum(scores_r, EPS) if method == "wrmd" else np.ones(len(xr))
    wc = np.maximum(-scores_c, EPS) if method == "wrmd" else np.ones(len(xc))
    mean_r, mean_c = np_weighted_mean(xr, wr), np_weighted_mean(xc, wc)
    raw = mean_r - mean_c if method == "md" else np_rmd(xr, xc, 0.1, wr, wc, relative=True)
    params = {} if method == "md" else {"ridge_lambda": 0.1, "lambda_mode": "relative"}
    if method == "wrmd":
        params["epsilon"] = EPS
    est = make_estimator(method, units="separation", **params).fit(X, scores)
    expected = np_separation(raw, mean_r, mean_c)
    np.testing.assert_allclose(est.direction_.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.unit_direction_.numpy(), raw / np.linalg.norm(raw), rtol=1e-5, atol=1e-6)
    assert est.separation_ == pytest.approx(float(np.linalg.norm(expected)), rel=1e-9)
    # raw units keep the closed form and expose the same u and s
    raw_est = make_estimator(method, **params).fit(X, scores)
    np.testing.assert_allclose(raw_est.direction_.numpy(), raw, rtol=1e-5, atol=1e-6)
    assert raw_est.separation_ == pytest.approx(est.separation_, rel=1e-12)
    # α = −1 moves the refusal mean onto the compliance mean along u
    u = est.unit_direction_.double().numpy()
    assert float(u @ (mean_r - est.direction_.double().numpy())) == pytest.approx(float(u @ mean_c), abs=1e-5)


def test_mix_directions_closed_form():
    rng = np.random.default_rng(3)
    prompt, answer = rng.normal(size=16), rng.normal(size=16)
    difference = prompt * 0.7 + rng.normal(size=16) * 0.1
    u = prompt / np.linalg.norm(prompt)
    s = float(u @ difference)
    for rho in (0.0, 0.5, 1.0, 3.0):
        expected = s * (u + rho * answer / np.linalg.norm(answer))
        got = mix_directions(torch.tensor(prompt), answer * 5.0, difference, rho)  # the answer's norm does not matter
        assert got.dtype == torch.float32 and got.shape == (16,)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
        # the component along the prompt direction keeps its meaning: α = −1 moves μ_r onto μ_c along û_p
        assert float(u @ (got.double().numpy() - rho * s * answer / np.linalg.norm(answer))) == pytest.approx(s)


def test_mix_directions_errors():
    a, b = np.ones(4), np.arange(4.0)
    with pytest.raises(ValueError, match=r"answer_scale must be a finite number >= 0, got -0.1"):
        mix_directions(a, b, a, -0.1)
    with pytest.raises(ValueError, match=r"answer_scale must be a finite number >= 0, got nan"):
        mix_directions(a, b, a, float("nan"))
    with pytest.raises(ValueError, match="differ in size: 4, 3, 4"):
        mix_directions(a, b[:3], a, 0.5)
    with pytest.raises(ValueError, match="answer_direction is zero"):
        mix_directions(a, np.zeros(4), a, 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        mix_directions(a, np.array([1.0, np.nan, 0, 0]), a, 0.5)
    with pytest.raises(ValueError, match="does not point from the compliance mean towards the refusal mean"):
        mix_directions(a, b, -a, 0.5)


def test_separation_units_md_is_the_mean_difference(data):
    X, y, *_ = data
    torch.testing.assert_close(
        MeanDifference(units="separation").fit(X, y).direction_, MeanDifference().fit(X, y).direction_
    )


@pytest.mark.parametrize("method", ["md", "rmd", "wrmd"])
def test_compute_direction_separation_units(data, method):
    _, _, _, xr, xc, scores_r, scores_c = data
    weights = {}
    if method == "wrmd":
        weights = {"refusal_weights": np.maximum(scores_r, EPS), "compliant_weights": np.maximum(-scores_c, EPS)}
    raw = compute_direction(xr, xc, method=method, **weights).double().numpy()
    wr = weights.get("refusal_weights", np.ones(len(xr)))
    wc = weights.get("compliant_weights", np.ones(len(xc)))
    sep = compute_direction(xr, xc, method=method, units="separation", **weights)
    np.testing.assert_allclose(
        sep.numpy(), np_separation(raw, np_weighted_mean(xr, wr), np_weighted_mean(xc, wc)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("c", [0.01, 37.0])
def test_separation_units_scale_with_the_activations(data, c):
    """Scaling every activation by c scales a separation-unit vector by c (α keeps its meaning), while a raw
    relative-λ RMD vector scales by 1/c (α would have to change by c²)."""
    X, y, *_ = data
    params = {"ridge_lambda": 0.1, "lambda_mode": "relative"}
    sep = RidgeMeanDifference(units="separation", **params)
    torch.testing.assert_close(sep.fit(c * X, y).direction_, c * sep.fit(X, y).direction_, rtol=1e-5, atol=1e-7)
    raw = RidgeMeanDifference(**params)
    torch.testing.assert_close(raw.fit(c * X, y).direction_, raw.fit(X, y).direction_ / c, rtol=1e-5, atol=1e-7)


def test_bad_units(data):
    X, y, *_ = data
    with pytest.raises(ValueError, match="unknown units 'sigma'"):
        MeanDifference(units="sigma").fit(X, y)
    _, _, _, xr, xc, _, _ = data
    with pytest.raises(ValueError, match="unknown units"):
        compute_direction(xr, xc, units="norm")


@pytest.mark.parametrize("method", ["md", "rmd", "wrmd"])
def test_fit_statistics_equals_fit(data, method):
    X, _, scores, *_ = data
    weighting = "confidence" if method == "wrmd" else "none"
    stats = ActivationStatistics(layers=[3, 5], hidden_size=X.shape[1], weighting=weighting, epsilon=EPS)
    stacked = np.stack([X, 2 * X], axis=1)  # layer 5 = 2 × layer 3
    stats.add(torch.as_tensor(stacked[:33]), scores=scores[:33])
    stats.add(torch.as_tensor(stacked[33:]), scores=scores[33:])
    params = {"epsilon": EPS} if method == "wrmd" else {}
    direct = make_estimator(method, **params).fit(X, scores)
    streamed = make_estimator(method, **params).fit_statistics(stats, layer=3)
    torch.testing.assert_close(streamed.direction_, direct.direction_, rtol=1e-6, atol=1e-7)
    assert (streamed.n_refusal_, streamed.n_compliance_) == (direct.n_refusal_, direct.n_compliance_)
    directions = fit_directions(make_estimator(method, **params), stats)
    assert sorted(directions) == [3, 5]
    torch.testing.assert_close(directions[3], direct.direction_, rtol=1e-6, atol=1e-7)
    if method == "md":
        torch.testing.assert_close(directions[5], 2 * direct.direction_, rtol=1e-6, atol=1e-6)


def test_sklearn_protocol(data):
    X, y, *_ = data
    est = WeightedRidgeMeanDifference(ridge_lambda=0.7, lambda_mode="relative", epsilon=0.05)
    assert est.get_params() == {
        "ridge_lambda": 0.7,
        "lambda_mode": "relative",
        "epsilon": 0.05,
        "refusal_threshold": 0.1,
        "compliance_threshold": -0.1,
        "units": "raw",
        "covariance": "compliance",
    }
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "direction_")
    fitted = RidgeMeanDifference().fit(X, y)
    assert fitted.fit(X, y) is fitted  # refitting replaces, no state carried over
    again = RidgeMeanDifference().fit(X, y)
    torch.testing.assert_close(fitted.direction_, again.direction_)


# ----------------------------------------------------------------------------------------- planted directions


def planted(seed: int = 0, d: int = 64, n: int = 300, mislabelled: int = 0):
    """Two classes differing by 4·u, plus a high-variance nuisance direction q that also shifts by 8."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    u, q = basis[:, 0], basis[:, 1]

    def sample(m: int, refusal: bool) -> np.ndarray:
        x = rng.normal(size=(m, d)) + rng.normal(scale=10.0, size=(m, 1)) * q
        return x + (4.0 * u + 8.0 * q if refusal else 0.0)

    xr = sample(n, True)
    xc = sample(n, False)
    scores_r = rng.uniform(0.6, 1.0, size=n)
    scores_c = rng.uniform(-1.0, -0.6, size=n)
    if mislabelled:
        # the first `mislabelled` of each side really belong to the other side; the judge is unsure about them
        xr[:mislabelled] = sample(mislabelled, False)
        xc[:mislabelled] = sample(mislabelled, True)
        scores_r[:mislabelled] = 0.02
        scores_c[:mislabelled] = -0.02
    X = np.concatenate([xr, xc])
    y = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    return X, y, np.concatenate([scores_r, scores_c]), u


# λ equal to the mean compliance variance: with isotropic noise and n/d ≈ 5, a tiny ridge would let the spread
# of the sample covariance's eigenvalues (Marchenko-Pastur) tilt the solution; the nuisance variance is 100,
# so it is still damped ~40 times more than u.
RIDGE = {"ridge_lambda": 1.0, "lambda_mode": "relative"}


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_direction_recovered_by_ridge_not_by_md(seed):
    X, y, scores, u = planted(seed)
    md = cosine(MeanDifference().fit(X, y).direction_, u)
    rmd = cosine(RidgeMeanDifference(**RIDGE).fit(X, y).direction_, u)
    wrmd = cosine(WeightedRidgeMeanDifference(**RIDGE).fit(X, y, scores=scores).direction_, u)
    assert md <= 0.8, md  # MD ∝ 4u + 8q: cosine ≈ 0.45
    assert rmd >= 0.95, rmd
    assert wrmd >= 0.95, wrmd


def test_wrmd_downweights_mislabelled_samples():
    X, y, scores, u = planted(seed=3, mislabelled=75)
    rmd = cosine(RidgeMeanDifference(**RIDGE).fit(X, y).direction_, u)
    wrmd = cosine(WeightedRidgeMeanDifference(**RIDGE).fit(X, y, scores=scores).direction_, u)
    assert wrmd >= 0.95, wrmd
    assert wrmd > rmd + 0.05, (wrmd, rmd)


# ------------------------------------------------------------------------------------------ errors


def test_empty_class_errors(data):
    X, y, scores, xr, xc, *_ = data
    with pytest.raises(ValueError, match="compliant_acts is empty"):
        compute_direction(xr, xc[:0], method="md")
    with pytest.raises(ValueError, match="refusal_acts is empty"):
        compute_direction(xr[:0], xc, method="rmd")
    all_refusal_or_neutral = np.where(scores > 0, scores, 0.0)
    with pytest.raises(ValueError, match="no compliance samples after dropping neutral"):
        MeanDifference().fit(X, all_refusal_or_neutral)
    with pytest.raises(ValueError, match="X is empty"):
        MeanDifference().fit(X[:0], y[:0])
    stats = ActivationStatistics(layers=[0], hidden_size=X.shape[1])
    stats.update(torch.as_tensor(xr), np.ones(len(xr), bool))
    with pytest.raises(ValueError, match="no compliance samples in the statistics"):
        MeanDifference().fit_statistics(stats)


def test_one_class_labels(data):
    X, y, *_ = data
    with pytest.raises(ValueError, match="only one class"):
        MeanDifference().fit(X, np.ones(len(X), bool))
    with pytest.raises(ValueError, match="only one class"):
        RidgeMeanDifference().fit(X, np.zeros(len(X), int))


def test_too_few_compliance_samples_for_covariance(data):
    _, _, _, xr, xc, *_ = data
    with pytest.raises(ValueError, match="at least 2 samples"):
        compute_direction(xr, xc[:1], method="rmd")
    # MD needs no covariance
    assert compute_direction(xr, xc[:1], method="md").shape == (xr.shape[1],)
    stats = ActivationStatistics(layers=[0], hidden_size=xr.shape[1])
    stats.update(torch.as_tensor(np.concatenate([xr, xc[:1]])), np.arange(len(xr) + 1) < len(xr))
    with pytest.raises(ValueError, match="at least 2 samples"):
        RidgeMeanDifference().fit_statistics(stats)


def test_dimension_and_shape_errors(data):
    X, y, scores, xr, xc, *_ = data
    with pytest.raises(ValueError, match="different hidden sizes"):
        compute_direction(xr, xc[:, :-1], method="rmd")
    with pytest.raises(ValueError, match="2-D"):
        MeanDifference().fit(X[0], y[:1])
    with pytest.raises(ValueError, match=r"labels must have shape \[70\]"):
        MeanDifference().fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"sample_weight must have shape"):
        MeanDifference().fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"refusal_weights must have shape"):
        compute_direction(xr, xc, method="wrmd", refusal_weights=np.ones(2), compliant_weights=np.ones(len(xc)))
    stats = ActivationStatistics(layers=[0, 1], hidden_size=X.shape[1])
    with pytest.raises(ValueError, match="activations must have shape"):
        stats.update(torch.as_tensor(X), y)
    with pytest.raises(ValueError, match="pass layer="):
        MeanDifference().fit_statistics(stats)
    with pytest.raises(ValueError, match="layer 7 is not in these statistics"):
        stats.mean("refusal", 7)


def test_non_finite_values(data):
    X, y, scores, xr, xc, *_ = data
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        MeanDifference().fit(bad, y)
    bad_scores = scores.copy()
    bad_scores[0] = np.inf
    with pytest.raises(ValueError, match="scores contains non-finite"):
        WeightedRidgeMeanDifference().fit(X, bad_scores)
    with pytest.raises(ValueError, match="non-finite"):
        compute_direction(xr, np.full_like(xc, np.inf), method="rmd")
    with pytest.raises(ValueError, match="must lie in"):
        MeanDifference().fit(X, scores * 2)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_bad_lambda(data, lam):
    X, y, *_ = data
    with pytest.raises(ValueError, match="ridge_lambda"):
        RidgeMeanDifference(ridge_lambda=lam).fit(X, y)


def test_bad_parameters(data):
    X, y, scores, xr, xc, *_ = data
    with pytest.raises(ValueError, match="unknown method 'pca'"):
        compute_direction(xr, xc, method="pca")
    with pytest.raises(ValueError, match="unknown method"):
        make_estimator("lda")
    with pytest.raises(ValueError, match="unknown lambda_mode"):
        RidgeMeanDifference(lambda_mode="scaled").fit(X, y)
    with pytest.raises(ValueError, match="epsilon"):
        WeightedRidgeMeanDifference(epsilon=0).fit(X, scores)
    with pytest.raises(ValueError, match="thresholds"):
        MeanDifference(refusal_threshold=-0.5, compliance_threshold=0.5).fit(X, scores)
    with pytest.raises(ValueError, match="needs refusal-confidence scores"):
        WeightedRidgeMeanDifference().fit(X, y)
    with pytest.raises(ValueError, match="needs refusal_weights and compliant_weights"):
        compute_direction(xr, xc, method="wrmd")
    with pytest.raises(ValueError, match="scores= is also given"):
        MeanDifference().fit(X, scores, scores=scores)


def test_statistics_weighting_mismatch(data):
    X, _, scores, *_ = data
    plain = ActivationStatistics(layers=[0], hidden_size=X.shape[1])
    plain.add(torch.as_tensor(X), scores=scores)
    weighted = ActivationStatistics(layers=[0], hidden_size=X.shape[1], weighting="confidence", epsilon=0.05)
    weighted.add(torch.as_tensor(X), scores=scores)
    with pytest.raises(ValueError, match="weighting='confidence'"):
        WeightedRidgeMeanDifference().fit_statistics(plain)
    with pytest.raises(ValueError, match="weighting='none'"):
        RidgeMeanDifference().fit_statistics(weighted)
    with pytest.raises(ValueError, match="epsilon"):
        WeightedRidgeMeanDifference(epsilon=0.01).fit_statistics(weighted)
    WeightedRidgeMeanDifference(epsilon=0.05).fit_statistics(weighted)
