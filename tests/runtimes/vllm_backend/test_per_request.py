"""Per-request adapters: requests in one continuous batch select different adapters and scales
(``SamplingParams.extra_args``; the API's ``vllm_xargs``), each answered as the hand-written contract hooks steer
it alone; undeclared adapters and malformed fields are refused before they reach the engine."""

from __future__ import annotations

import pytest
from conftest import heldout_prompts
from test_steering import ADD, reference

from steering_adapter.measure.sampling import answer_from_tokens, format_chat, user_conversation

TOKENS = 48


def _generate(engine, prompts, extra_args):
    """Greedy answers of one ``llm.generate`` call whose requests carry their own ``extra_args``."""
    from vllm import SamplingParams

    ids = engine._token_ids(format_chat(engine.tokenizer, [user_conversation(p, None) for p in prompts]))
    params = [
        SamplingParams(temperature=0, max_tokens=TOKENS, stop_token_ids=engine.eos_ids, extra_args=extra)
        for extra in extra_args
    ]
    outputs = engine._generate(ids, params, False)
    answers = []
    for output in outputs:
        tokens = list(output.outputs[0].token_ids)
        finished = bool(tokens) and tokens[-1] in engine.eos_ids
        answers.append(answer_from_tokens(engine.tokenizer, tokens, [0.0] * len(tokens), finished).token_ids)
    return answers


def test_requests_in_one_batch_each_get_their_own_adapter(engine, organism, vectors):
    prompts = heldout_prompts(8)
    choices = [
        None,
        {"steering_adapter": "req-add"},
        {"steering_adapter": "req-add", "steering_scale": -1.0},
        {"steering_adapter": "req-ablate"},
    ]
    hooks = [
        [],
        [{"vectors": vectors["add"], **ADD}],
        [{"vectors": vectors["add"], **ADD, "scale": -1.0}],
        [{"vectors": vectors["ablate"], "mode": "ablate"}],
    ]
    settings = dict(k=1, temperature=0.0, max_new_tokens=TOKENS)
    expected = {i: reference(organism, prompts, h, **settings) for i, h in enumerate(hooks)}
    engine.set_adapters([])
    # every prompt under every choice, interleaved, in one batch
    batch = [(p, c) for p in range(len(prompts)) for c in range(len(choices))]
    got = _generate(engine, [prompts[p] for p, _ in batch], [choices[c] for _, c in batch])
    agree = sum(tokens == expected[c][p].answers[0].token_ids for tokens, (p, c) in zip(got, batch, strict=True))
    assert agree >= 0.95 * len(batch), f"{agree}/{len(batch)}"
    differ = sum(expected[1][p].answers[0].token_ids != expected[0][p].answers[0].token_ids for p in range(8))
    assert differ >= 2


def test_request_adapter_applies_after_the_engine_adapters(engine, organism, vectors, adapter_dirs):
    prompts = heldout_prompts(8)
    engine.set_adapters([str(adapter_dirs["ablate"])])
    try:
        got = _generate(engine, prompts, [{"steering_adapter": "req-add"}] * len(prompts))
    finally:
        engine.set_adapters([])
    hooks = [{"vectors": vectors["ablate"], "mode": "ablate"}, {"vectors": vectors["add"], **ADD}]
    expected = reference(organism, prompts, hooks, k=1, temperature=0.0, max_new_tokens=TOKENS)
    assert sum(g == e.answers[0].token_ids for g, e in zip(got, expected, strict=True)) >= 0.95 * len(prompts)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"steering_adapter": "nope"}, "unknown steering adapter 'nope'"),
        ({"steering_scale": 2.0}, "needs steering_adapter"),
        ({"steering_adapter": "req-add", "steering_scale": "big"}, "finite number"),
    ],
)
def test_bad_request_fields_are_refused(engine, extra, message):
    with pytest.raises(Exception, match=message):
        _generate(engine, ["hello"], [extra])
