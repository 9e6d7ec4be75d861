"""Separation units make α portable: a model whose residual stream is the same up to a factor c gets vectors scaled
by c and the same steered outputs and the same chosen α; raw RMD vectors would scale by 1/c instead.

The scaled model is built by hand (an independent construction, not through the code under test): a Llama whose
embeddings and every residual writer (attention ``o_proj``, MLP ``down_proj``) are multiplied by c. RMSNorm makes
every block's input, hence its contribution, scale with the residual stream, so each block output is exactly c
times the original's (up to the norm's ε, set to ~0) and the final norm removes c from the logits.
"""

from __future__ import annotations

import pytest
import torch
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS, tiny_model, tiny_tokenizer

from steering_adapter import adapter_from_vectors
from steering_adapter.directions.collection import collect_activations
from steering_adapter.directions.estimators import RidgeMeanDifference
from steering_adapter.directions.fitting import fit_directions
from steering_adapter.measure.evaluation import EvalSet
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judges.base import Judge, Judgment
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.run.selection import SelectionObjective, SweepSettings, sweep_layers_and_scale

C = 37.0
PROMPTS = SENSITIVE_PROMPTS[:5] + HARMLESS_PROMPTS[:5]
SCORES = [1.0] * 5 + [-1.0] * 5


def _model(scale: float) -> torch.nn.Module:
    model = tiny_model("llama", seed=0, rms_norm_eps=1e-30)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(scale)
        for block in model.model.layers:
            block.self_attn.o_proj.weight.mul_(scale)
            block.mlp.down_proj.weight.mul_(scale)
    return model


def _directions(model, units: str) -> dict[int, torch.Tensor]:
    result = collect_activations(model, tiny_tokenizer(), PROMPTS, scores=SCORES, progress=False)
    estimator = RidgeMeanDifference(ridge_lambda=0.1, lambda_mode="relative", units=units)
    return fit_directions(estimator, result.stats)


class FirstTokenJudge(Judge):
    """Deterministic: refusal when the answer's first character has an even code point."""

    def judge(self, prompt, answer):
        return Judgment(1 if answer and ord(answer[0]) % 2 == 0 else -1, "first char", "")


def test_hidden_states_scale_by_c():
    ids = tiny_tokenizer()(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        small = _model(1.0)(ids, output_hidden_states=True)
        big = _model(C)(ids, output_hidden_states=True)
    for a, b in zip(small.hidden_states[1:-1], big.hidden_states[1:-1], strict=True):
        torch.testing.assert_close(b, C * a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(big.logits, small.logits, rtol=1e-4, atol=1e-4)


def test_separation_vectors_scale_by_c_and_steer_identically():
    small, big = _model(1.0), _model(C)
    v_small, v_big = _directions(small, "separation"), _directions(big, "separation")
    raw_small, raw_big = _directions(small, "raw"), _directions(big, "raw")
    ids = tiny_tokenizer()(PROMPTS[0], return_tensors="pt")["input_ids"]
    for layer in v_small:
        torch.testing.assert_close(v_big[layer], C * v_small[layer], rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(raw_big[layer], raw_small[layer] / C, rtol=1e-3, atol=1e-6)
    layers = [1, 2]
    for alpha in (-0.5, -1.5, 3.0):
        a = adapter_from_vectors(_model(1.0), {i: v_small[i] for i in layers}, scale=alpha)
        b = adapter_from_vectors(_model(C), {i: v_big[i] for i in layers}, scale=alpha)
        with torch.no_grad():
            torch.testing.assert_close(b(ids).logits, a(ids).logits, rtol=1e-3, atol=1e-3)
    # the raw vectors do not carry over: the same α steers the scaled model c² times less
    a = adapter_from_vectors(_model(1.0), {i: raw_small[i] for i in layers}, scale=-3.0)
    b = adapter_from_vectors(_model(C), {i: raw_big[i] for i in layers}, scale=-3.0)
    with torch.no_grad():
        assert (b(ids).logits - a(ids).logits).abs().max() > 1e-2


@pytest.mark.parametrize("units", ["separation"])
def test_chosen_alpha_is_unchanged(tmp_path, units):
    sets = [EvalSet("target", SENSITIVE_PROMPTS[5:8], "target"), EvalSet("benign", HARMLESS_PROMPTS[5:6], "benign")]
    objective = SelectionObjective(delta=100.0, kl_budget=None, max_repetition=None, max_perplexity_ratio=None)
    results = []
    for scale in (1.0, C):
        model = _model(scale)
        directions = _directions(model, units)
        results.append(
            sweep_layers_and_scale(
                model,
                tiny_tokenizer(),
                directions,
                [2, 1, 3, 0],
                sets,
                FirstTokenJudge(),
                tmp_path / f"c{scale:g}",
                settings=SweepSettings(layer_counts=(2,), refine_steps=2, objective=objective),
                evaluation=EvaluationSettings(progress=False),
                sampling=SamplingSettings(k=1, temperature=0.0, max_new_tokens=4),
            )
        )
    small, big = results
    assert [(p.alpha, p.refusal_pct) for p in big.points] == [(p.alpha, p.refusal_pct) for p in small.points]
    assert big.choice is not None and big.choice.alpha == small.choice.alpha
