"""One prompt encoder: sampling, activation collection, KL, answer log-probabilities and the local judge feed the
model the same token ids for the same prompt and system turn (recorded at the embedding, compared with a
hand-rendered template)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from steering_adapter.directions.collection import collect_activations
from steering_adapter.measure.judges.backends import TransformersJudgeBackend
from steering_adapter.measure.likelihood import NextTokenKL
from steering_adapter.measure.sampling import answer_logprobs, sample_answers
from steering_adapter.measure.sampling.prompt_encoding import encode_texts, pad_batch

PROMPTS = ["Hello there", "What is the capital of France, please?"]
SYSTEM = "Be brief."


def hand_ids(tokenizer, prompt: str, system: str | None) -> list[int]:
    """The template of tests/helpers/tiny.py written out by hand, tokenised without extra special tokens."""
    text = "<bos>" + (f"<|system|>{system}<|end|>" if system else "") + f"<|user|>{prompt}<|end|><|assistant|>"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class EmbeddingRecorder:
    """Records the unpadded token ids of every row of every full forward pass (not the one-token decode steps)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows: list[list[int]] = []
        self._handle = model.get_input_embeddings().register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        ids = args[0]
        if ids.shape[1] > 1:
            self.rows.extend(ids.tolist())

    def remove(self) -> None:
        self._handle.remove()


def unpadded(rows: list[list[int]], pad_id: int) -> set[tuple[int, ...]]:
    out = set()
    for row in rows:
        while row and row[0] == pad_id:
            row = row[1:]
        while row and row[-1] == pad_id:
            row = row[:-1]
        out.add(tuple(row))
    return out


@pytest.mark.parametrize("system", [None, SYSTEM])
def test_every_stage_feeds_the_same_prompt_ids(system):
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    expected = {tuple(hand_ids(tokenizer, p, system)) for p in PROMPTS}
    pad_id = tokenizer.pad_token_id
    stages = {}

    recorder = EmbeddingRecorder(model)
    samples = sample_answers(
        model, tokenizer, PROMPTS, k=1, temperature=0, max_new_tokens=3, system_prompt=system, progress=False
    )
    stages["sampling"] = recorder.rows
    recorder.remove()

    recorder = EmbeddingRecorder(model)
    collect_activations(model, tokenizer, PROMPTS, system_prompt=system, progress=False)
    stages["activations"] = recorder.rows
    recorder.remove()

    recorder = EmbeddingRecorder(model)
    NextTokenKL(tokenizer, PROMPTS, system_prompt=system, progress=False).measure(model)
    stages["kl"] = recorder.rows
    recorder.remove()

    for name, rows in stages.items():
        assert unpadded(rows, pad_id) == expected, name

    # teacher-forced answer log-probabilities: each row is one prompt's ids followed by its answer's ids
    recorder = EmbeddingRecorder(model)
    answers = [list(s.answers[0].token_ids) for s in samples]
    answer_logprobs(model, tokenizer, PROMPTS, answers, system_prompt=system)
    recorder.remove()
    prompt_ids = [hand_ids(tokenizer, p, system) for p in PROMPTS]
    rows = unpadded(recorder.rows, pad_id)
    for ids, answer in zip(prompt_ids, answers, strict=True):
        assert any(
            row[: len(ids)] == tuple(ids) and row[len(ids) : len(ids) + len(answer)] == tuple(answer) for row in rows
        )


def test_judge_backend_uses_the_same_encoder():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    recorder = EmbeddingRecorder(model)
    backend = TransformersJudgeBackend(model, tokenizer, max_new_tokens=2, progress=False)
    backend.complete_many([[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[0]}]])
    recorder.remove()
    assert unpadded(recorder.rows, tokenizer.pad_token_id) == {tuple(hand_ids(tokenizer, PROMPTS[0], SYSTEM))}


def test_pad_batch_left_and_right():
    rows = [[5, 6, 7], [8]]
    ids, mask = pad_batch(rows, 0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch(rows, 0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="padding side"):
        pad_batch(rows, 0, side="middle")


def test_special_tokens_added_once():
    chat = tiny_tokenizer()
    plain = tiny_tokenizer(chat_template=False)
    rendered = "<bos><|user|>Hi<|end|><|assistant|>"
    assert encode_texts(chat, [rendered]) == [chat(rendered, add_special_tokens=False)["input_ids"]]
    assert encode_texts(plain, ["Hi"]) == [plain("Hi", add_special_tokens=True)["input_ids"]]
    with pytest.raises(ValueError, match="tokenise to no tokens"):
        encode_texts(plain, [""], add_special_tokens=False)


def test_stop_and_padding_ids_follow_their_order_of_precedence():
    from types import SimpleNamespace

    from steering_adapter.measure.sampling.prompt_encoding import padding_id, stop_token_ids

    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7, 9]))
    assert stop_token_ids(model, SimpleNamespace(eos_token_id=9)) == [7, 9]  # no duplicate
    assert stop_token_ids(model, SimpleNamespace(eos_token_id=3)) == [7, 9, 3]
    assert stop_token_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=None)) == []
    assert padding_id(SimpleNamespace(pad_token_id=5, eos_token_id=3), [7]) == 5
    assert padding_id(SimpleNamespace(pad_token_id=None, eos_token_id=3), [7]) == 7
    assert padding_id(SimpleNamespace(pad_token_id=None, eos_token_id=3)) == 3
    assert padding_id(SimpleNamespace()) == 0
