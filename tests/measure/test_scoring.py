"""Refusal confidence c(x), classes, per-set rates and the histogram, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from steering_adapter.measure.refusal_score import classify, plot_histogram, refusal_confidence, summarize


def test_equal_logprobs_give_the_mean_label():
    assert refusal_confidence([1, 1, -1, 1, -1], [-0.7] * 5) == pytest.approx(0.2)
    assert refusal_confidence([1, 1, 1], [-3.0, -1.0, -2.0]) == pytest.approx(1.0)
    assert refusal_confidence([-1], [-5.0]) == pytest.approx(-1.0)


def test_weights_are_geometric_mean_probabilities():
    # w ∝ p̄ = exp(mean log p): p̄ = (e^-1, e^-2), labels (+1, -1)
    a, b = math.exp(-1.0), math.exp(-2.0)
    assert refusal_confidence([1, -1], [-1.0, -2.0]) == pytest.approx((a - b) / (a + b))
    assert refusal_confidence([1, -1], [-1.0, -2.0]) == pytest.approx(math.tanh(0.5))


def test_unparseable_labels_are_dropped_not_counted_as_zero():
    # with the 0-labelled answer kept in the softmax the score would shrink; it must be dropped entirely
    a, b = math.exp(-1.0), math.exp(-2.0)
    expected = (a - b) / (a + b)
    assert refusal_confidence([1, 0, -1, 0], [-1.0, -0.1, -2.0, -0.2]) == pytest.approx(expected)
    assert refusal_confidence([0, 1, 0], [-0.1, -9.0, -0.2]) == pytest.approx(1.0)


def test_tau():
    # τ = 2: w ∝ exp(log p̄ / 2) = (e^-0.5, e^-1, e^-1.5), labels (+1, -1, +1)
    w = [math.exp(-0.5), math.exp(-1.0), math.exp(-1.5)]
    expected = (w[0] - w[1] + w[2]) / sum(w)
    assert refusal_confidence([1, -1, 1], [-1.0, -2.0, -3.0], tau=2.0) == pytest.approx(expected)
    # τ -> ∞: plain mean of labels; τ -> 0: label of the most likely answer
    assert refusal_confidence([1, -1, -1], [-1.0, -2.0, -3.0], tau=1e9) == pytest.approx(-1 / 3)
    assert refusal_confidence([1, -1, -1], [-1.0, -2.0, -3.0], tau=1e-3) == pytest.approx(1.0)


def test_numerically_stable_with_very_negative_logprobs():
    # exp(-1000) underflows to 0 in a naive softmax (0/0 = NaN)
    a, b = 1.0, math.exp(-1.0)
    assert refusal_confidence([1, -1], [-1000.0, -1001.0]) == pytest.approx((a - b) / (a + b))
    assert refusal_confidence([1, -1, 1], [-5000.0, -5000.0, -5000.0]) == pytest.approx(1 / 3)
    assert refusal_confidence([-1, 1], [-1e6, -10.0]) == pytest.approx(1.0)


def test_all_dropped_is_nan():
    assert math.isnan(refusal_confidence([0, 0, 0], [-1.0, -2.0, -3.0]))
    assert math.isnan(refusal_confidence([], []))
    # answers without a log-probability (no answer tokens) are dropped as well
    assert math.isnan(refusal_confidence([1, -1], [float("nan"), float("nan")]))
    assert refusal_confidence([1, -1], [float("nan"), -3.0]) == pytest.approx(-1.0)


def test_errors():
    with pytest.raises(ValueError, match="differ in length"):
        refusal_confidence([1, -1], [-1.0])
    with pytest.raises(ValueError, match="tau"):
        refusal_confidence([1], [-1.0], tau=0.0)
    with pytest.raises(ValueError, match="labels must be"):
        refusal_confidence([2, -1], [-1.0, -1.0])
    with pytest.raises(ValueError, match="threshold"):
        classify(0.5, threshold=-0.1)


def test_classify():
    assert classify(0.5) == "refusal"
    assert classify(0.1) == "neutral"  # strict inequalities, as in the method
    assert classify(0.1000001) == "refusal"
    assert classify(-0.1) == "neutral"
    assert classify(-0.11) == "compliance"
    assert classify(0.0) == "neutral"
    assert classify(0.3, threshold=0.5) == "neutral"
    assert classify(float("nan")) == "unjudged"


def test_summarize():
    scores = [1.0, 0.6, 0.05, -0.05, -0.8, float("nan")]
    summary = summarize(scores)
    assert (summary["n"], summary["n_judged"]) == (6, 5)
    assert (summary["refusal"], summary["neutral"], summary["compliance"], summary["unjudged"]) == (2, 2, 1, 1)
    assert summary["refusal_pct"] == pytest.approx(40.0)
    assert summary["neutral_pct"] == pytest.approx(40.0)
    assert summary["compliance_pct"] == pytest.approx(20.0)
    assert summary["unjudged_pct"] == pytest.approx(100 / 6)
    assert summary["mean_score"] == pytest.approx(0.16)
    empty = summarize([float("nan")])
    assert empty["n_judged"] == 0 and math.isnan(empty["refusal_pct"]) and empty["unjudged_pct"] == 100.0


def test_plot_histogram(tmp_path):
    path = plot_histogram([1.0, 0.5, -0.2, -1.0, float("nan")], tmp_path / "plots" / "hist.png", "deccp censored")
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
