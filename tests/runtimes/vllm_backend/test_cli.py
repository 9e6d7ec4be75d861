"""``steering-adapter generate --backend vllm`` and ``chat --backend vllm``, run as a user runs them (a subprocess
of the command, its own vLLM engine in compiled mode), against the transformers organism steered by the hand-written
contract hooks (tests/helpers/reference.py) and decoded greedily with ``model.generate``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import heldout_prompts
from reference import contract_hooks
from test_steering import ADD

from steering_adapter.measure.sampling import format_chat, user_conversation

TOKENS = 32


def _run(arguments: list[str], stdin: str | None = None) -> str:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "STEERING_ADAPTER_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "steering_adapter.cli", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _greedy(organism, conversations, adapters) -> list[str]:
    """Hand-decoded greedy answers of the transformers organism (steered by the contract hooks when ``adapters``)."""
    model, tokenizer = organism
    answers = []
    with contract_hooks(model, "model.layers", adapters), torch.no_grad():
        for text in format_chat(tokenizer, conversations):
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            out = model.generate(ids, do_sample=False, max_new_tokens=TOKENS, pad_token_id=tokenizer.eos_token_id)
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            answers.append(text.splitlines()[0] if text else text)  # the commands print one line per answer here
    return answers


def _agree(got: list[str], want: list[str]) -> float:
    return sum(a.strip() == b for a, b in zip(got, want, strict=True)) / len(want)


@pytest.fixture(scope="module")
def prompts():
    return heldout_prompts(6)


def test_generate_with_the_vllm_backend(organism, adapter_dirs, vectors, prompts):
    argv = ["generate", "--backend", "vllm", "--model", "organism", "--adapter", str(adapter_dirs["add"])]
    argv += [arg for prompt in prompts for arg in ("--prompt", prompt)]
    out = _run([*argv, "--compare", "--max-new-tokens", str(TOKENS), "--no-progress"])
    base = re.findall(r"^\[base\]    (.*)$", out, flags=re.M)
    steered = re.findall(r"^\[steered\] (.*)$", out, flags=re.M)
    assert len(base) == len(steered) == len(prompts), out
    conversations = [user_conversation(prompt, None) for prompt in prompts]
    want_base = _greedy(organism, conversations, [])
    want_steered = _greedy(organism, conversations, [{"vectors": vectors["add"], **ADD}])
    assert sum(a != b for a, b in zip(want_base, want_steered, strict=True)) >= 3, "the adapter changes too little"
    assert _agree(base, want_base) == 1.0, (base, want_base)
    assert _agree(steered, want_steered) >= 5 / 6, (steered, want_steered)


def test_chat_with_the_vllm_backend_keeps_the_conversation(organism, adapter_dirs, vectors, prompts):
    first, second, third = prompts[:3]
    stdin = f"{first}\n{second}\n/reset\n{third}\n"
    argv = ["chat", "--backend", "vllm", "--model", "organism", "--adapter", str(adapter_dirs["add"])]
    out = _run([*argv, "--max-new-tokens", str(TOKENS), "--no-progress"], stdin=stdin)
    answers = [line for line in out.splitlines() if line.strip()]
    assert len(answers) == 3, out
    hooks = [{"vectors": vectors["add"], **ADD}]
    (one,) = _greedy(organism, [[{"role": "user", "content": first}]], hooks)
    two_turns = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": answers[0].strip()},
        {"role": "user", "content": second},
    ]
    (two,) = _greedy(organism, [two_turns], hooks)
    (three,) = _greedy(organism, [[{"role": "user", "content": third}]], hooks)  # after /reset: a new conversation
    assert _agree(answers, [one, two, three]) >= 2 / 3, (answers, [one, two, three])
    assert answers[0].strip() == one
