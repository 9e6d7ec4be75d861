"""KL from the base model, perplexity and answer relevance against independent hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import contract_hooks
from tiny import tiny_model, tiny_tokenizer

from steering_adapter import adapter_from_vectors
from steering_adapter.measure.likelihood import NextTokenKL, next_token_kl, perplexity
from steering_adapter.tuner import steering_disabled
from steering_adapter.tuner.model import set_adapter_scale

PROMPTS = ["How do I bake bread at home?", "What is the boiling point of water?", "Write a poem.", "Hi"]


def _chat_ids(tokenizer, prompt, system=None):
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_next_token_kl_matches_hand_computation(padding_side):
    tokenizer = tiny_tokenizer(padding_side=padding_side)
    vectors = {1: torch.randn(64, generator=torch.Generator().manual_seed(0)) * 2}
    base = tiny_model("llama")
    reference = tiny_model("llama")
    total, count, last = 0.0, 0, 0.0
    for prompt in PROMPTS:  # one prompt at a time, no padding
        ids = _chat_ids(tokenizer, prompt)
        with torch.no_grad():
            p = torch.log_softmax(base(ids).logits[0].double(), -1)
            with contract_hooks(reference, "model.layers", [{"vectors": vectors, "scale": 1.0}]):
                q = torch.log_softmax(reference(ids).logits[0].double(), -1)
        kl = (p.exp() * (p - q)).sum(-1)
        total += kl.sum().item()
        count += kl.numel()
        last += kl[-1].item()
    model = adapter_from_vectors(tiny_model("llama"), vectors, scale=1.0)
    got = next_token_kl(model, tokenizer, PROMPTS, batch_size=3, progress=False)
    assert got["positions"] == count
    assert got["mean_kl"] == pytest.approx(total / count, rel=1e-4)
    assert got["mean_kl_last"] == pytest.approx(last / len(PROMPTS), rel=1e-4)
    assert got["mean_kl"] > 0


def _hand_kl(tokenizer, vectors, scale, last_n, system=None):
    """Per-prompt unpadded passes; KL over each prompt's last ``last_n`` positions."""
    base, reference = tiny_model("llama"), tiny_model("llama")
    total, count, last = 0.0, 0, 0.0
    for prompt in PROMPTS:
        ids = _chat_ids(tokenizer, prompt, system)
        with torch.no_grad():
            p = torch.log_softmax(base(ids).logits[0].double(), -1)[-last_n:]
            with contract_hooks(reference, "model.layers", [{"vectors": vectors, "scale": scale}]):
                q = torch.log_softmax(reference(ids).logits[0].double(), -1)[-last_n:]
        kl = (p.exp() * (p - q)).sum(-1)
        total, count, last = total + kl.sum().item(), count + kl.numel(), last + kl[-1].item()
    return total / count, last / len(PROMPTS), count


def test_cached_base_kl_on_the_last_tokens():
    """NextTokenKL keeps the base side across steering strengths and bounds the positions per prompt."""
    tokenizer = tiny_tokenizer()
    vectors = {1: torch.randn(64, generator=torch.Generator().manual_seed(0)) * 2}
    model = adapter_from_vectors(tiny_model("llama"), vectors, scale=1.0)
    kl = NextTokenKL(tokenizer, PROMPTS, max_tokens=3, batch_size=3, system_prompt="Be brief.", progress=False)
    calls = []
    handle = model.get_base_model().register_forward_hook(lambda *_: calls.append(1))
    for scale in (1.0, -2.5):
        set_adapter_scale(model, scale)
        got = kl.measure(model)
        mean, last, count = _hand_kl(tokenizer, vectors, scale, 3, system="Be brief.")
        assert got["positions"] == count == 3 * len(PROMPTS)
        assert got["mean_kl"] == pytest.approx(mean, rel=1e-4)
        assert got["mean_kl_last"] == pytest.approx(last, rel=1e-4)
    handle.remove()
    assert len(calls) == 2 + 2 + 2  # 2 batches: base once, then steered twice
    with pytest.raises(ValueError, match="another model"):
        kl.measure(adapter_from_vectors(tiny_model("llama"), vectors, scale=1.0))
    with pytest.raises(ValueError, match="max_tokens"):
        NextTokenKL(tokenizer, PROMPTS, max_tokens=0)


def test_kl_is_zero_without_steering_effect():
    tokenizer = tiny_tokenizer()
    model = adapter_from_vectors(tiny_model("llama"), {1: torch.zeros(64)}, scale=1.0)
    assert next_token_kl(model, tokenizer, PROMPTS, progress=False)["mean_kl"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="no prompts"):
        next_token_kl(model, tokenizer, [], progress=False)


def test_perplexity_matches_hand_computation():
    tokenizer = tiny_tokenizer(padding_side="right")
    model = tiny_model("qwen3")
    nll, count = 0.0, 0
    for text in PROMPTS:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        nll += F.cross_entropy(logits.double(), ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    assert perplexity(model, tokenizer, PROMPTS, batch_size=2, progress=False) == pytest.approx(
        math.exp(nll / count), rel=1e-5
    )


def test_steering_disabled_restores_state():
    model = adapter_from_vectors(tiny_model("llama"), {1: torch.randn(64)}, scale=3.0)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        steered = model(ids).logits
        with steering_disabled(model):
            plain = model(ids).logits
        assert torch.equal(model(ids).logits, steered)
        assert torch.equal(plain, model.unload()(ids).logits)


def test_relevance_scores_on_topic_answers_higher():
    from steering_adapter.measure.relevance import RelevanceScorer

    scorer = RelevanceScorer(batch_size=2)
    prompt = "What happened at Tiananmen Square in June 1989?"
    answers = [
        "In June 1989 the army cleared Tiananmen Square of protesters and many people were killed.",
        "Here are some tips for giving an engaging speech to a large audience.",
    ]
    scores = scorer.score([prompt, prompt], answers)
    assert scores[0] > 0.5 > scores[1]

    # independent reference: each text alone (no padding), mean over all its tokens, normalised
    def embed(text):
        batch = scorer.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = scorer.model(**batch).last_hidden_state[0]
        return F.normalize(hidden.mean(0), dim=0)

    for answer, score in zip(answers, scores, strict=True):
        assert score == pytest.approx(float(embed(prompt) @ embed(answer)), abs=1e-5)
    with pytest.raises(ValueError, match="1 prompts but 2 answers"):
        scorer.score([prompt], answers)


def test_relevance_of_a_pair_never_depends_on_its_company_and_each_text_is_embedded_once():
    """A pair's score is bit-identical alone (no cache) and among other pairs in any order, texts of other token
    lengths sharing its pass or not (a resumed run scores as an uninterrupted one); in one call each distinct text goes
    through the encoder once, every pass SCORE_ROWS rows of one length bucket, each row padded (its own length rounded
    up past a multiple of BUCKET_WIDTH); a full cache drops the least recently used texts and still scores every pair
    right."""
    from steering_adapter.measure.relevance import BUCKET_WIDTH, SCORE_ROWS, RelevanceScorer, bucket_length

    assert [bucket_length(n) for n in (1, BUCKET_WIDTH - 1, BUCKET_WIDTH, 2 * BUCKET_WIDTH + 3)] == [
        BUCKET_WIDTH,
        BUCKET_WIDTH,
        2 * BUCKET_WIDTH,
        3 * BUCKET_WIDTH,
    ]
    prompts = ["Who wrote Hamlet?", "Who wrote Macbeth?", "How do I bake bread?"]
    answers = ["Shakespeare.", "Knead the dough, let it rise, and bake it for forty minutes.", "Picasso did."]
    uncached = RelevanceScorer(cache_size=0)
    alone = [uncached.score([prompt], [answer])[0] for prompt, answer in zip(prompts, answers, strict=True)]
    assert len(uncached._cache) == 0

    scorer = RelevanceScorer(cache_size=4)
    lengths = {text: len(scorer.tokenizer(text)["input_ids"]) for text in prompts + answers}
    assert len(set(lengths.values())) == 5  # the two "Who wrote" prompts share a length
    buckets = {bucket_length(n) for n in lengths.values()}
    assert len(buckets) == 3  # 4, 5 and 6 tokens share the first bucket: texts of different lengths share a pass
    passes = []
    scorer.model.register_forward_pre_hook(lambda module, args, kwargs: passes.append(kwargs), with_kwargs=True)
    order = [2, 0, 1, 0, 2]
    together = scorer.score([prompts[i] for i in order], [answers[i] for i in order])
    assert together == [alone[i] for i in order]
    assert len(passes) == 3  # 6 distinct texts in 3 buckets, each bucket within one pass
    assert {batch["input_ids"].shape for batch in passes} == {(SCORE_ROWS, width) for width in buckets}
    assert not any(bool(batch["attention_mask"][:, -1].any()) for batch in passes)  # every row ends in padding
    assert {4, 5, 6} <= {int(n) for batch in passes for n in batch["attention_mask"].sum(1)}
    assert max(len({int(n) for n in batch["attention_mask"].sum(1)}) for batch in passes) == 3  # in one pass
    assert len(scorer._cache) == 4 and list(scorer._cache)[-1] == answers[1]  # the last text used is kept last
    assert scorer.score(prompts, answers) == alone
