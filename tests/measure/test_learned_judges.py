"""The tag-probability judge against a hand-written forward pass, and the embedding judge's fit / predict contract."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from steering_adapter.measure.judges import DegeneracyDetector
from steering_adapter.measure.judges.labeled_answers import LabeledAnswer
from steering_adapter.measure.judges.learned import EmbeddingJudge, labeled_answers
from steering_adapter.measure.judges.llm import TAG_ONLY_INSTRUCTIONS, build_judge_messages
from steering_adapter.measure.judges.tag_probability import REPLIES, TagProbabilityJudge

PAIRS = [
    ("What happened in the capital?", "I cannot help with that request, sorry."),
    ("How do I bake bread at home?", "Sure, here is a detailed answer with several steps."),
    ("Describe the region.", "Yes yes yes yes yes"),
]


def _reference_probability(model, tokenizer, prompt, answer):
    """Sum of the reply tokens' log-softmax, teacher-forced after the chat template's generation prompt, by hand."""
    content = build_judge_messages(prompt, answer, instructions=TAG_ONLY_INSTRUCTIONS)[0]["content"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    sums = []
    for reply in REPLIES:
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + reply_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
        sums.append(float(logprobs.gather(-1, torch.tensor(reply_ids)[:, None]).sum()))
    return 1.0 / (1.0 + math.exp(sums[1] - sums[0]))


def test_tag_probability_equals_a_hand_written_forward_pass():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", seed=3)
    judge = TagProbabilityJudge(model, tokenizer, batch_size=2)
    got = judge.refusal_probability(PAIRS)
    expected = [_reference_probability(model, tokenizer, p, a) for p, a in PAIRS]
    assert got == pytest.approx(expected, abs=1e-5)
    labels = [j.label for j in judge.judge_many(PAIRS)]
    assert labels == [1 if p >= 0.5 else -1 for p in expected]
    assert judge.name.startswith("tag-probability:")


def test_tag_probability_settings_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        TagProbabilityJudge(tiny_model("llama"), tiny_tokenizer(), threshold=1.0)


@pytest.fixture(scope="module")
def fitted():
    return EmbeddingJudge().fit(labeled_answers("exemplars"))


def test_embedding_judge_separates_its_own_exemplars(fitted):
    exemplars = labeled_answers("exemplars")
    assert {a.category for a in exemplars} >= {"loop", "nonsense", "official_narrative", "answer", "wrong_answer"}
    judged = fitted.judge_many([(a.prompt, a.answer) for a in exemplars])
    right = sum((j.label == 1) == a.refusal for j, a in zip(judged, exemplars, strict=True))
    assert right / len(exemplars) >= 0.9  # training accuracy of a linear model on 45 well-separated examples
    assert fitted.n_train_ == len(exemplars)
    assert fitted.name.startswith("embedding:") and fitted.name != "embedding:unfitted"


def test_embedding_judge_calls_degenerate_answers_refusals_whatever_the_classifier(fitted):
    loop = "Sure, here is the answer: yes yes yes yes yes yes"
    assert DegeneracyDetector().find(loop) is not None
    assert fitted.predict_proba(["Q?"], [loop]).tolist() == [1.0]


def test_embedding_judge_contract():
    judge = EmbeddingJudge()
    with pytest.raises(RuntimeError, match="not fitted"):
        judge.predict_proba(["q"], ["a"])
    with pytest.raises(ValueError, match="refusals and non-refusals"):
        judge.fit([LabeledAnswer("q", "a", True), LabeledAnswer("q", "b", True)])
    with pytest.raises(ValueError, match="unknown labeled part"):
        labeled_answers("train")
