"""The vLLM sampling backend against the transformers runtime on the organism: greedy answers, log-probabilities,
seeds and the resumable records."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import heldout_prompts

from steering_adapter.measure.judges import PatternJudge
from steering_adapter.measure.sampling import format_chat, sample_answers, user_conversation
from steering_adapter.measure.scored_runs import ANSWERS_FILE, score_prompts

GREEDY = dict(k=1, temperature=0.0, max_new_tokens=48)


def agreement(reference, got):
    """Share of prompts whose answer tokens are identical, and the largest |Δ mean_logprob| among those."""
    same, worst = 0, 0.0
    for ref, out in zip(reference, got, strict=True):
        for a, b in zip(ref.answers, out.answers, strict=True):
            if a.token_ids == b.token_ids:
                same += 1
                worst = max(worst, abs(a.mean_logprob - b.mean_logprob))
                assert a.text == b.text and a.finished == b.finished and a.num_tokens == b.num_tokens
    total = sum(len(ref.answers) for ref in reference)
    return same / total, worst


def test_greedy_answers_and_logprobs_match_transformers(engine, organism):
    model, tokenizer = organism
    prompts = heldout_prompts(60)
    reference = sample_answers(model, tokenizer, prompts, batch_size=16, progress=False, **GREEDY)
    got = engine.sample_answers(prompts, progress=False, **GREEDY)
    share, worst = agreement(reference, got)
    assert share >= 0.95, f"only {share:.0%} of greedy answers agree"
    assert worst < 1e-3
    assert [r.prompt_id for r in got] == [str(i) for i in range(len(prompts))]


def _teacher_forced_mean_logprob(model, tokenizer, prompt, answer_ids):
    """Hand-computed mean log-probability (raw logits, temperature 1) of ``answer_ids`` after the chat prompt."""
    text = format_chat(tokenizer, [user_conversation(prompt, None)])[0]
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + list(answer_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, -1).gather(-1, torch.tensor(answer_ids)[:, None])[:, 0]
    return float(logprobs.mean())


def test_sampled_logprobs_are_the_raw_model_logprobs(engine, organism):
    """At temperature 0.7 with top-p and top-k, mean_logprob is still the model's own temperature-1 distribution."""
    model, tokenizer = organism
    prompts = heldout_prompts(8)
    got = engine.sample_answers(
        prompts, k=3, temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=32, seed=3, progress=False
    )
    for samples in got:
        assert len(samples.answers) == 3
        for answer in samples.answers:
            expected = _teacher_forced_mean_logprob(model, tokenizer, samples.prompt, answer.token_ids)
            assert answer.mean_logprob == pytest.approx(expected, abs=1e-3)


def test_seeds_make_samples_reproducible_and_independent_of_batching(engine):
    prompts = heldout_prompts(6)
    settings = dict(k=2, temperature=1.0, max_new_tokens=24, seed=11, progress=False)
    first = engine.sample_answers(prompts, **settings)
    again = engine.sample_answers(prompts, **settings)
    alone = engine.sample_answers(prompts[:1], **settings)
    assert [[a.token_ids for a in s.answers] for s in first] == [[a.token_ids for a in s.answers] for s in again]
    assert [a.token_ids for a in alone[0].answers] == [a.token_ids for a in first[0].answers]
    other = engine.sample_answers(prompts, **{**settings, "seed": 12})
    assert [[a.token_ids for a in s.answers] for s in other] != [[a.token_ids for a in s.answers] for s in first]


def test_bad_arguments_are_refused_like_the_transformers_backend(engine):
    with pytest.raises(ValueError, match="prompts is empty"):
        engine.sample_answers([])
    with pytest.raises(ValueError, match="top_p"):
        engine.sample_answers(["hi"], top_p=0.0)
    with pytest.raises(ValueError, match="prompt_ids"):
        engine.sample_answers(["hi", "there"], prompt_ids=["a"])


class _ExplodingSampler:
    """A sampler that must not be used: every record is already on disk."""

    def _explode(self, *args, **kwargs):
        raise AssertionError("the sampler was used although every record is on disk")

    sample_answers = steering_disabled = next_token_kl = perplexity = answer_logprobs = _explode
    add_adapter = activate = set_scale = remove_adapters = _explode


def test_score_prompts_records_and_resume(engine, organism, tmp_path):
    _, tokenizer = organism
    prompts = heldout_prompts(6)
    settings = dict(k=2, temperature=1.0, max_new_tokens=24, seed=5, progress=False)
    scores = score_prompts(engine, tokenizer, prompts, PatternJudge(), tmp_path, batch_size=4, **settings)
    records = [json.loads(line) for line in (tmp_path / ANSWERS_FILE).read_text().splitlines()]
    assert len(records) == len(prompts)
    assert set(records[0]) == {"key", "prompt", "prompt_id", "settings", "answers"}
    assert set(records[0]["answers"][0]) == {
        "text",
        "reasoning",
        "mean_logprob",
        "num_tokens",
        "finished",
        "token_ids",
    }
    again = score_prompts(_ExplodingSampler(), tokenizer, prompts, PatternJudge(), tmp_path, batch_size=4, **settings)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in scores]
