"""``estimator.answer_scale``: the direction stage fits the estimator on prompt tokens and on the model's own answer
tokens and adds a push along the answer direction to the prompt vector. Checked against numpy on activations read
with hand-written hooks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steering_adapter.measure.sampling import as_sampler
from steering_adapter.run.recipe import read_recipe_yaml, recipe_from_dict
from steering_adapter.run.stages.context import RunContext
from steering_adapter.run.stages.estimate import estimate_directions
from steering_adapter.run.stages.inputs import resolve_prompts
from steering_adapter.run.stages.load import build_judge, load_model

pytestmark = pytest.mark.usefixtures("single_thread")

RECIPE = "recipes/no-political-refusal.yaml"
LAYERS = [3, 5]


def _recipe(answer_scale: float):
    data = read_recipe_yaml(RECIPE)
    data["prompts"]["max_train_per_set"] = 16
    data["sampling"].update(k=2, max_new_tokens=16)
    data["estimator"].update(position="mean", layers=LAYERS, answer_scale=answer_scale)
    return recipe_from_dict(data)


def _block_outputs(model, ids: list[int]) -> list[np.ndarray]:
    outputs: list[np.ndarray] = []
    handles = [
        block.register_forward_hook(lambda m, a, out: outputs.append((out[0] if isinstance(out, tuple) else out)[0]))
        for block in model.model.layers
    ]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return [o.double().numpy() for o in outputs]


def _np_rmd_separation(xr, xc, wr, wc, lam):
    mean_r = (wr[:, None] * xr).sum(0) / wr.sum()
    mean_c = (wc[:, None] * xc).sum(0) / wc.sum()
    centred = xc - mean_c
    cov = np.einsum("n,ni,nj->ij", wc, centred, centred) / (wc.sum() - (wc**2).sum() / wc.sum())
    raw = np.linalg.solve(cov + lam * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]), mean_r - mean_c)
    return raw / np.linalg.norm(raw), mean_r - mean_c


def _context(recipe, model, tokenizer, judge, out) -> RunContext:
    return RunContext(
        recipe, model, tokenizer, as_sampler(model, tokenizer), judge, out, progress=False, log=lambda _: None
    )


def test_answer_scale_mixes_prompt_and_answer_directions(tmp_path):
    recipe = _recipe(0.5)
    model, tokenizer = load_model(recipe.model)
    judge = build_judge(recipe.judge, recipe.model)
    estimated = estimate_directions(_context(recipe, model, tokenizer, judge, tmp_path))
    directions, provenance = estimated.vectors, estimated.provenance
    assert provenance["answer_scale"] == 0.5 and sorted(directions) == LAYERS

    # the reference: every prompt forwarded alone, then prompt + each of its answers, read by our own hooks
    prompts = list(
        dict.fromkeys(
            p
            for s in [*recipe.prompts.refusal, *recipe.prompts.compliance]
            for p in resolve_prompts(s, "train", recipe)
        )
    )
    scores_dir = tmp_path / "train_scores"
    records = {r["prompt"]: r for r in map(json.loads, (scores_dir / "answers.jsonl").read_text().splitlines())}
    scores = {r["prompt"]: r["score"] for r in json.loads((scores_dir / "scores.json").read_text())["scores"]}
    prompt_acts, answer_acts, answer_w, answer_s = [], [], [], []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        prompt_acts.append([out.mean(0) for out in _block_outputs(model, ids)])
        answers = [a["token_ids"] for a in records[prompt]["answers"] if a["token_ids"]]
        for tokens in answers:
            outputs = _block_outputs(model, ids + tokens)
            answer_acts.append([out[len(ids) :].mean(0) for out in outputs])
            answer_w.append(1 / len(answers))
            answer_s.append(scores[prompt])
    s = np.array([scores[p] for p in prompts])
    answer_w, answer_s = np.array(answer_w), np.array(answer_s)
    assert (s > 0.1).sum() >= 2 and (s < -0.1).sum() >= 2
    for layer in LAYERS:
        xp = np.array([a[layer] for a in prompt_acts])
        up, difference = _np_rmd_separation(
            xp[s > 0.1], xp[s < -0.1], np.ones((s > 0.1).sum()), np.ones((s < -0.1).sum()), 0.1
        )
        xa = np.array([a[layer] for a in answer_acts])
        r, c = answer_s > 0.1, answer_s < -0.1
        ua, _ = _np_rmd_separation(xa[r], xa[c], answer_w[r], answer_w[c], 0.1)
        expected = float(up @ difference) * (up + 0.5 * ua)
        np.testing.assert_allclose(
            directions[layer].double().numpy(), expected, rtol=2e-3, atol=2e-4 * np.abs(expected).max()
        )
        assert abs(float(up @ ua)) < 0.99  # the answer direction is another direction: the mix is not a no-op

    # answer_scale 0 (the default) is the prompt direction alone, and has its own cache key
    estimated = estimate_directions(_context(_recipe(0.0), model, tokenizer, judge, tmp_path))
    plain, provenance = estimated.vectors, estimated.provenance
    assert provenance["answer_scale"] == 0.0
    for layer in LAYERS:
        cosine = float(torch.nn.functional.cosine_similarity(plain[layer].double(), directions[layer].double(), dim=0))
        assert cosine < 0.999


def test_answer_scale_without_answer_tokens_is_a_clear_error():
    from steering_adapter.measure.sampling import Answer
    from steering_adapter.measure.scored_runs import PromptScore
    from steering_adapter.run.stages.estimate import _answer_directions

    scores = [PromptScore("k", "Why?", "0", 1.0, "refusal", [1], [-0.1])]
    empty = [[Answer(text="", reasoning=None, mean_logprob=float("nan"), num_tokens=0)]]
    with pytest.raises(ValueError, match="no training answer has any token"):
        _answer_directions(None, None, _recipe(1.0), None, scores, empty, False, lambda _: None)
