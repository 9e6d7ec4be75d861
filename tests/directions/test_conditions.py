"""Condition fitting for gated steering: threshold search against brute force, held-out metrics recomputed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from reference import block_output
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS, tiny_model, tiny_tokenizer

from steering_adapter.directions.conditions import best_threshold, fit_condition


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos, neg = rng.normal(1.0, 1.0, 7), rng.normal(-0.5, 1.0, 9)
        threshold, accuracy = best_threshold(pos, neg)
        grid = np.linspace(-5, 5, 20001)
        brute = max(((pos > t).mean() + (neg <= t).mean()) / 2 for t in grid)
        assert accuracy == pytest.approx(brute, abs=1e-9)
        assert ((pos > threshold).mean() + (neg <= threshold).mean()) / 2 == pytest.approx(accuracy)
    assert best_threshold(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == (1.5, 1.0)
    # grouped negatives: the true-negative rate is the mean over groups
    pos, neg = rng.normal(1.0, 1.0, 8), rng.normal(-0.5, 1.0, 12)
    groups = np.array([0] * 10 + [1] * 2)
    threshold, accuracy = best_threshold(pos, neg, groups)
    grid = np.linspace(-6, 6, 24001)
    brute = max(
        ((pos > t).mean() + ((neg[groups == 0] <= t).mean() + (neg[groups == 1] <= t).mean()) / 2) / 2 for t in grid
    )
    assert accuracy == pytest.approx(brute, abs=1e-9)
    # a cap on the false-positive rate of every group: no negative may pass
    threshold, accuracy = best_threshold(pos, neg, groups, max_false_positive_rate=0.0)
    assert threshold >= neg.max()
    capped = max(
        ((pos > t).mean() + ((neg[groups == 0] <= t).mean() + (neg[groups == 1] <= t).mean()) / 2) / 2
        for t in grid
        if (neg <= t).all()
    )
    assert accuracy == pytest.approx(capped, abs=1e-9)
    with pytest.raises(ValueError, match="positive and negative"):
        best_threshold(np.array([]), np.array([1.0]))


def _last_token_output(model, tokenizer, prompt, layer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return block_output(model, layer, ids)[0, -1].double()


def test_fit_condition_metrics_match_hand_projection():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    pos, neg = SENSITIVE_PROMPTS, HARMLESS_PROMPTS
    fit = fit_condition(model, tokenizer, pos[:4], neg[:4], pos[2:], neg[2:], layers=[0, 1, 2], progress=False)
    assert fit.layer in (0, 1, 2) and set(fit.per_layer) == {0, 1, 2}
    assert fit.heldout_balanced_accuracy == max(fit.per_layer.values())
    # independent: mean difference of hand-captured outputs, then the gate's rates on the held-out prompts
    train_pos = torch.stack([_last_token_output(model, tokenizer, p, fit.layer) for p in pos[:4]])
    train_neg = torch.stack([_last_token_output(model, tokenizer, p, fit.layer) for p in neg[:4]])
    direction = train_pos.mean(0) - train_neg.mean(0)
    assert torch.nn.functional.cosine_similarity(direction, fit.direction.double(), dim=0) > 0.9999
    unit = direction / direction.norm()
    held_pos = [float(_last_token_output(model, tokenizer, p, fit.layer) @ unit) for p in pos[2:]]
    held_neg = [float(_last_token_output(model, tokenizer, p, fit.layer) @ unit) for p in neg[2:]]
    assert fit.heldout_tpr == pytest.approx(np.mean([v > fit.threshold for v in held_pos]))
    assert fit.heldout_fpr == pytest.approx(np.mean([v > fit.threshold for v in held_neg]))
    assert fit.config_fields()["condition_layer"] == fit.layer
    for a, b in itertools.pairwise(sorted(fit.per_layer)):
        assert a < b


def test_fit_condition_rejects_empty_sets():
    with pytest.raises(ValueError, match="negative_heldout is empty"):
        fit_condition(tiny_model("llama"), tiny_tokenizer(), ["a"], ["b"], ["c"], [], progress=False)


def test_fit_condition_ridge_direction_matches_numpy_closed_form():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    pos, neg = SENSITIVE_PROMPTS, HARMLESS_PROMPTS
    groups = [0, 0, 0, 1, 1]
    fit = fit_condition(
        model,
        tokenizer,
        pos[:4],
        neg[:5],
        pos[2:],
        neg[2:],
        layers=[1],
        method="rmd",
        ridge_lambda=0.5,
        negative_train_groups=groups,
        progress=False,
    )
    assert (fit.method, fit.ridge_lambda) == ("rmd", 0.5)
    assert fit.metadata()["method"] == "rmd"
    # independent: (Σ_neg + λ·tr(Σ_neg)/d·I)⁻¹(μ_pos − μ_neg) with every group weighing the same, in numpy
    p = np.stack([_last_token_output(model, tokenizer, x, 1).numpy() for x in pos[:4]])
    n = np.stack([_last_token_output(model, tokenizer, x, 1).numpy() for x in neg[:5]])
    w = np.array([1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2])
    mu_n = (w[:, None] * n).sum(0) / w.sum()
    sigma = np.cov(n.T, aweights=w)
    lam = 0.5 * np.trace(sigma) / sigma.shape[0]
    expected = np.linalg.solve(sigma + lam * np.eye(sigma.shape[0]), p.mean(0) - mu_n)
    np.testing.assert_allclose(fit.direction.double().numpy(), expected, rtol=2e-4, atol=1e-6 * np.abs(expected).max())
    with pytest.raises(ValueError, match="method must be 'md' or 'rmd'"):
        fit_condition(model, tokenizer, pos[:2], neg[:2], pos[2:], neg[2:], method="lda", progress=False)
