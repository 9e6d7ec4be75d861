"""vLLM's compiled mode, the default: the steering built into the traced graph (steering_adapter.runtimes.vllm.slots).

The session engine (conftest.engine) runs compiled, so every steering test of this folder (add with layer scales,
ablate, both orders, α overrides, gates per sequence, per-request adapters and α in one batch, serve) checks the
compiled path against the hand-written hooks; with at most 8 requests at once, requests arrive while others decode.
This module adds what only compiled mode has: the engine really compiles, adapters attached after compilation
steer (the graph reads the slots, nothing is traced again), requests without an adapter are bit-identical to a
plain vLLM engine, and what does not fit the slots is refused. Eager mode keeps working (its own engine here).
"""

from __future__ import annotations

import pytest
from conftest import ABLATE_LAYER, ADD_LAYERS, COND_LAYER, MAX_SEQS, heldout_prompts
from test_sampling import GREEDY, agreement
from test_steering import ADD, reference

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.measure.sampling import format_chat, user_conversation
from steering_adapter.models.organism import ORGANISM_DIR

TOKENS = 16


def _vllm_config(sampler):
    return sampler.llm.llm_engine.vllm_config


def test_the_engine_compiles_with_the_steering_slots(engine):
    from vllm.config import CompilationMode

    config = _vllm_config(engine)
    assert not config.model_config.enforce_eager
    assert config.compilation_config.mode != CompilationMode.NONE
    capacity = engine._rpc("steering_capacity")[0]
    assert (capacity["slots"], capacity["gates"], capacity["max_requests"]) == (4, 1, MAX_SEQS)
    # the slot sizes are part of vLLM's compile-cache key in the worker: a plain engine never loads a steering graph
    assert capacity["cache_key"] == {"slots": 4, "gates": 1, "ids": capacity["ids"]}


def _token_ids(engine, prompts):
    return engine._token_ids(format_chat(engine.tokenizer, [user_conversation(p, None) for p in prompts]))


def _fixed_length(llm, ids, extra_args):
    """Greedy outputs of exactly TOKENS tokens each (ignore_eos: every step of every request has the same shape in
    any engine, so two engines see the same batches) with their log-probabilities."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [
        SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True, logprobs=0, extra_args=extra)
        for extra in extra_args
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=False)
    return [
        (list(o.outputs[0].token_ids), [next(iter(step.values())).logprob for step in o.outputs[0].logprobs])
        for o in outputs
    ]


@pytest.fixture(scope="module")
def plain():
    """A plain compiled vLLM engine on the organism (no steering installed), as configured as the session engine."""
    from vllm import LLM

    llm = LLM(
        str(ORGANISM_DIR),
        dtype="float32",
        max_model_len=256,
        max_num_seqs=MAX_SEQS,
        seed=0,
        logprobs_mode="raw_logprobs",
        enable_prefix_caching=False,
        enable_chunked_prefill=False,
    )
    yield llm
    del llm


def test_requests_without_an_adapter_are_bit_identical_to_a_plain_engine(engine, plain):
    """In one batch with requests that select adapters, each request that selects none gets exactly the tokens and
    log-probabilities of a plain vLLM engine that serves the same batch."""
    prompts = heldout_prompts(8)
    choices = [None, {"steering_adapter": "req-add"}, {"steering_adapter": "req-ablate"}]
    batch = [(p, c) for p in range(len(prompts)) for c in range(len(choices))]
    ids = _token_ids(engine, [prompts[p] for p, _ in batch])
    engine.set_adapters([])
    steered = _fixed_length(engine.llm, ids, [choices[c] for _, c in batch])
    base = _fixed_length(plain, ids, [None] * len(batch))
    unsteered = [i for i, (_, c) in enumerate(batch) if c == 0]
    assert [steered[i] for i in unsteered] == [base[i] for i in unsteered]  # tokens and log-probabilities, exactly
    moved = sum(steered[i][0] != base[i][0] for i, (_, c) in enumerate(batch) if c == 1)
    assert moved >= 2, "req-add barely changes the answers: the batch would not mix steered and plain rows"


def test_adapters_switch_in_the_running_engine(engine, organism, adapter_dirs, vectors):
    """Attach, replace, rescale and detach after compilation: each state answers as the reference hooks (the slots
    are rewritten in place; the compiled graph is never traced again: vLLM dropped its guards)."""
    prompts = heldout_prompts(12)
    states = [
        ([str(adapter_dirs["ablate"])], [{"vectors": vectors["ablate"], "mode": "ablate"}]),
        ([{"path": str(adapter_dirs["add"]), "name": "add"}], [{"vectors": vectors["add"], **ADD}]),
        ([], []),
    ]
    for specs, hooks in states:
        engine.set_adapters(specs)
        share, worst = agreement(
            reference(organism, prompts, hooks, **GREEDY), engine.sample_answers(prompts, progress=False, **GREEDY)
        )
        assert share >= 0.95 and worst < 1e-3, (specs, share, worst)


def _gated_folder(organism, vectors, root, name):
    model, _ = organism
    peft_model = adapter_from_vectors(
        model,
        vectors["add"],
        **ADD,
        condition=vectors["condition"][COND_LAYER],
        condition_layer=COND_LAYER,
        condition_threshold=0.0,
    )
    save_adapter(peft_model, root / name)
    peft_model.unload()
    return root / name


def test_what_does_not_fit_the_slots_is_refused(engine, organism, adapter_dirs, vectors, tmp_path):
    engine.set_adapters([str(adapter_dirs["add"])])
    before = engine._rpc("steering_describe")
    gated = [{"path": str(_gated_folder(organism, vectors, tmp_path, n)), "name": n} for n in ("g1", "g2")]
    with pytest.raises(
        Exception, match=r"2 condition-gated adapters but the engine was started with steering_gates=1"
    ):
        engine.set_adapters(gated)
    layer = 3  # add (blocks 2, 3), ablate (3, 4), add again: 3 plan steps on block 3, plus the 2 request adapters
    assert layer in ADD_LAYERS and layer in vectors["ablate"] and ABLATE_LAYER in vectors["ablate"]
    crowded = [
        {"path": str(adapter_dirs["add"]), "name": "a1"},
        {"path": str(adapter_dirs["ablate"]), "name": "b1"},
        {"path": str(adapter_dirs["add"]), "name": "a2"},
    ]
    with pytest.raises(Exception, match=rf"block {layer} needs 5 steering slots .* steering_slots=4"):
        engine.set_adapters(crowded)
    assert engine._rpc("steering_describe") == before  # a refused change leaves the engine as it was
    engine.set_adapters([])


@pytest.fixture(scope="module")
def eager(adapter_dirs):
    """The same engine in vLLM's eager mode (steering by forward hooks)."""
    from steering_adapter.runtimes.vllm import VllmSampler

    sampler = VllmSampler(str(ORGANISM_DIR), dtype="float32", max_model_len=256, seed=0, enforce_eager=True)
    yield sampler
    sampler.close()


def test_eager_mode_still_steers(eager, organism, adapter_dirs, vectors):
    from vllm.config import CompilationMode

    assert _vllm_config(eager).compilation_config.mode == CompilationMode.NONE
    prompts = heldout_prompts(12)
    hooks = [{"vectors": vectors["add"], **ADD}, {"vectors": vectors["ablate"], "mode": "ablate"}]
    eager.set_adapters([str(adapter_dirs["add"]), str(adapter_dirs["ablate"])])
    got = eager.sample_answers(prompts, progress=False, **GREEDY)
    share, worst = agreement(reference(organism, prompts, hooks, **GREEDY), got)
    assert share >= 0.95 and worst < 1e-3
