"""Sampling K answers: shapes, seeds, greedy decoding, log-probabilities against a plain forward pass, </think>."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS, tiny_model, tiny_tokenizer
from transformers import LogitsProcessor, LogitsProcessorList

from steering_adapter.measure.sampling import (
    Answer,
    PromptSamples,
    answer_logprobs,
    format_chat,
    sample_answers,
    split_reasoning,
)

PROMPTS = [HARMLESS_PROMPTS[0], SENSITIVE_PROMPTS[0], "Hi"]
SAMPLING = dict(k=3, max_new_tokens=8, progress=False, batch_size=2)


pytestmark = pytest.mark.usefixtures("single_thread")


def reference_mean_logprob(model, tokenizer, prompt: str, answer_ids: list[int], system_prompt=None) -> float:
    """Mean log-prob of ``answer_ids`` after the formatted prompt, from one unpadded forward pass."""
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(answer_ids))
    return float(logprobs[positions, torch.tensor(answer_ids)].mean())


class ForceTokens(LogitsProcessor):
    """Forces the generated continuation to be ``targets`` (then keeps forcing the last one)."""

    def __init__(self, targets: list[int], prompt_width: int):
        self.targets = targets
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores):
        step = min(input_ids.shape[1] - self.prompt_width, len(self.targets) - 1)
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.targets[step]] = 0.0
        return forced


def test_shapes_and_records(llama, tokenizer):
    results = sample_answers(llama, tokenizer, PROMPTS, **SAMPLING)
    assert [r.prompt for r in results] == PROMPTS
    assert [r.prompt_id for r in results] == ["0", "1", "2"]
    for samples in results:
        assert isinstance(samples, PromptSamples)
        assert len(samples.answers) == 3
        for answer in samples.answers:
            assert isinstance(answer, Answer)
            assert answer.reasoning is None
            assert 1 <= answer.num_tokens <= 8 and answer.num_tokens == len(answer.token_ids)
            assert math.isfinite(answer.mean_logprob) and answer.mean_logprob < 0
            assert answer.finished == (answer.token_ids[-1] == tokenizer.eos_token_id)
        assert PromptSamples.from_dict(samples.to_dict()) == samples
    # k samples of one prompt differ (sampling at temperature 1 from a random model)
    assert len({tuple(a.token_ids) for a in results[0].answers}) > 1


def test_seed_reproducible_and_rng_untouched(llama, tokenizer):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample_answers(llama, tokenizer, PROMPTS, seed=7, **SAMPLING)
    assert torch.equal(torch.get_rng_state(), state), "the caller's global RNG state must be left alone"
    again = sample_answers(llama, tokenizer, PROMPTS, seed=7, **SAMPLING)
    other = sample_answers(llama, tokenizer, PROMPTS, seed=8, **SAMPLING)
    assert first == again
    assert [a.token_ids for r in first for a in r.answers] != [a.token_ids for r in other for a in r.answers]


def test_mean_logprob_matches_plain_forward_pass(llama, tokenizer):
    results = sample_answers(llama, tokenizer, PROMPTS, system_prompt="Be brief.", temperature=1.3, **SAMPLING)
    for samples in results:
        for answer in samples.answers:
            expected = reference_mean_logprob(llama, tokenizer, samples.prompt, answer.token_ids, "Be brief.")
            # the model's own log-probs (temperature 1), not the temperature-1.3 sampling distribution
            assert answer.mean_logprob == pytest.approx(expected, abs=1e-4)


def test_logprobs_are_raw_under_top_k_and_top_p(llama, tokenizer):
    """Truncated sampling (top-k 3, top-p 0.5, temperature 0.7) still records the model's untruncated log-probs."""
    results = sample_answers(llama, tokenizer, PROMPTS[:2], temperature=0.7, top_k=3, top_p=0.5, **SAMPLING)
    for samples in results:
        for answer in samples.answers:
            expected = reference_mean_logprob(llama, tokenizer, samples.prompt, answer.token_ids)
            assert answer.mean_logprob == pytest.approx(expected, abs=1e-4)


def test_answer_logprobs_teacher_forced(llama, tokenizer):
    """answer_logprobs scores given answers (of different lengths, batched) as one unpadded pass would."""
    answers = [[5, 9, 11, 3], [7], [12, 4, 4, 4, 4, 4]]
    values = answer_logprobs(llama, tokenizer, PROMPTS, answers, system_prompt="Be brief.", batch_size=2)
    for prompt, ids, got in zip(PROMPTS, answers, values, strict=True):
        assert got.shape == (len(ids),)
        expected = reference_mean_logprob(llama, tokenizer, prompt, ids, "Be brief.")
        assert float(got.mean()) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="3 prompts but 2 answers"):
        answer_logprobs(llama, tokenizer, PROMPTS, answers[:2])


def test_mean_logprob_under_steering_adapter(tokenizer):
    from steering_adapter import adapter_from_vectors

    model = tiny_model("llama", seed=1)
    generator = torch.Generator().manual_seed(0)
    steered = adapter_from_vectors(model, {1: 3.0 * torch.randn(64, generator=generator)}, scale=1.0)
    results = sample_answers(steered, tokenizer, PROMPTS[:2], **SAMPLING)
    answer = results[0].answers[0]
    expected = reference_mean_logprob(steered, tokenizer, PROMPTS[0], answer.token_ids)
    assert answer.mean_logprob == pytest.approx(expected, abs=1e-4)
    with steered.disable_adapter():
        unsteered = reference_mean_logprob(steered, tokenizer, PROMPTS[0], answer.token_ids)
    assert abs(unsteered - expected) > 1e-3


def test_thinking_split_and_eos_stop(llama, tokenizer):
    forced_text = "<think>hmm, politics</think>\n\nHello there"
    targets = tokenizer(forced_text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt_text = format_chat(tokenizer, [[{"role": "user", "content": PROMPTS[0]}]])[0]
    width = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    processors = LogitsProcessorList([ForceTokens(targets, width)])
    (samples,) = sample_answers(
        llama,
        tokenizer,
        PROMPTS[:1],
        k=2,
        max_new_tokens=len(targets) + 5,
        progress=False,
        generate_kwargs={"logits_processor": processors},
    )
    for answer in samples.answers:
        assert answer.text == "Hello there"
        assert answer.reasoning == "hmm, politics"
        assert answer.finished
        # answer tokens: those after the token that completes "</think>", plus the eos token
        assert answer.token_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(answer.token_ids[:-1]).strip() == "Hello there"
        assert answer.num_tokens == len(answer.token_ids) < len(targets)
        expected = reference_mean_logprob(llama, tokenizer, PROMPTS[0], targets)
        assert answer.mean_logprob != pytest.approx(expected, abs=1e-6)  # reasoning tokens are not averaged in
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + targets])
        with torch.no_grad():
            logprobs = torch.log_softmax(llama(input_ids=ids).logits[0].double(), dim=-1)
        start = len(prompt_ids) + len(targets) - answer.num_tokens
        positions = torch.arange(start - 1, len(prompt_ids) + len(targets) - 1)
        assert answer.mean_logprob == pytest.approx(float(logprobs[positions, ids[0, start:]].mean()), abs=1e-4)

    # thinking=False keeps the whole output as the answer
    (plain,) = sample_answers(
        llama,
        tokenizer,
        PROMPTS[:1],
        k=1,
        max_new_tokens=len(targets),
        progress=False,
        thinking=False,
        generate_kwargs={"logits_processor": processors},
    )
    assert plain.answers[0].reasoning is None and plain.answers[0].text == forced_text
    assert plain.answers[0].num_tokens == len(targets)


def test_thinking_cut_off_before_marker(llama, tokenizer):
    targets = tokenizer("<think>still thinking about it", add_special_tokens=False)["input_ids"]
    prompt_text = format_chat(tokenizer, [[{"role": "user", "content": "Hi"}]])[0]
    width = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    (samples,) = sample_answers(
        llama,
        tokenizer,
        ["Hi"],
        k=1,
        max_new_tokens=4,
        progress=False,
        thinking=True,
        generate_kwargs={"logits_processor": LogitsProcessorList([ForceTokens(targets, width)])},
    )
    answer = samples.answers[0]
    assert answer.text == "" and answer.reasoning and not answer.finished
    assert answer.num_tokens == 0 and math.isnan(answer.mean_logprob)
    assert Answer.from_dict(answer.to_dict()).to_dict() == answer.to_dict()


def test_greedy(llama, tokenizer):
    (one,) = sample_answers(llama, tokenizer, PROMPTS[:1], k=1, temperature=0, max_new_tokens=6, progress=False)
    assert len(one.answers) == 1
    with pytest.warns(UserWarning, match="identical"):
        (three,) = sample_answers(llama, tokenizer, PROMPTS[:1], k=3, temperature=0, max_new_tokens=6, progress=False)
    assert all(answer == one.answers[0] for answer in three.answers)
    # greedy output does not depend on the seed or on batching with a longer prompt (left padding)
    batched = sample_answers(
        llama, tokenizer, [PROMPTS[0], "x " * 30], k=1, temperature=0, max_new_tokens=6, seed=5, progress=False
    )
    assert batched[0].answers[0].token_ids == one.answers[0].token_ids
    assert batched[0].answers[0].mean_logprob == pytest.approx(one.answers[0].mean_logprob, abs=1e-4)


def test_plain_text_tokenizer_and_right_padding_side():
    tokenizer = tiny_tokenizer(chat_template=False, padding_side="right")
    model = tiny_model("gpt2")
    results = sample_answers(model, tokenizer, PROMPTS, k=2, max_new_tokens=5, progress=False, prompt_ids=list("abc"))
    assert [r.prompt_id for r in results] == ["a", "b", "c"]
    for samples in results:
        prompt_ids = tokenizer(samples.prompt)["input_ids"]
        answer = samples.answers[0]
        ids = torch.tensor([prompt_ids + answer.token_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
        assert answer.mean_logprob == pytest.approx(float(logprobs[positions, ids[0, len(prompt_ids) :]].mean()), 1e-4)


def test_split_reasoning_on_strings():
    assert split_reasoning("<think>\nLet me think.\n</think>\n\nThe answer.") == ("Let me think.", "The answer.")
    assert split_reasoning("no opening tag</think>answer") == ("no opening tag", "answer")
    assert split_reasoning("No reasoning here.") == (None, "No reasoning here.")
    assert split_reasoning("a</think>b</think>c") == ("a", "b</think>c")  # first marker ends the reasoning
    assert split_reasoning("x</think>y", marker=None) == (None, "x</think>y")
    assert split_reasoning("<think>cut off") == (None, "<think>cut off")


@pytest.mark.parametrize("special", [False, True])
def test_think_marker_as_a_single_token(special):
    """Real thinking tokenizers have ``</think>`` as one added token, sometimes a special one (dropped by decode)."""
    from steering_adapter.measure.sampling import split_answer_tokens

    tokenizer = tiny_tokenizer()
    if special:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    else:
        tokenizer.add_tokens(["<think>", "</think>"])
    ids = tokenizer("<think>\nhmm\n</think>\n\nHello there", add_special_tokens=False)["input_ids"]
    marker = ids.index(tokenizer.convert_tokens_to_ids("</think>"))
    assert split_answer_tokens(tokenizer, ids, "</think>", None) == ("hmm", "Hello there", marker + 1)
    assert split_answer_tokens(tokenizer, ids, "</think>", False)[0] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt_ids": ["a"]}, "prompt_ids"),
    ],
)
def test_argument_errors(llama, tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_answers(llama, tokenizer, PROMPTS, progress=False, **kwargs)


def test_prompt_errors(llama, tokenizer):
    with pytest.raises(ValueError, match="empty"):
        sample_answers(llama, tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="non-empty strings"):
        sample_answers(llama, tokenizer, ["ok", "  "], progress=False)
