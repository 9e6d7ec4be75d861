"""``steering-adapter generate`` (answer prompts) and ``steering-adapter chat`` (multi-turn, stdin) with adapters."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from steering_adapter.cli.exit_codes import EXIT_OK
from steering_adapter.cli.model_loading import (
    check_model_and_adapters,
    load_model_and_adapters,
    placement_overrides,
)
from steering_adapter.measure.judges.backends import TransformersJudgeBackend
from steering_adapter.measure.sampling.backend import Sampler, TransformersSampler, as_sampler

__all__ = ["RESET_COMMAND", "cmd_chat", "cmd_generate"]

RESET_COMMAND = "/reset"


def _open(args: argparse.Namespace) -> Sampler:
    """The base model with ``--adapter`` attached, on the transformers model or a vLLM engine (``--backend``)."""
    check_model_and_adapters(args.model, args.adapter or [])  # a missing folder fails before the model loads
    model, tokenizer = load_model_and_adapters(
        args.model, args.adapter or [], args.scale, None, placement_overrides(args), backend=args.backend
    )
    return as_sampler(model, tokenizer)  # a VllmSampler is one already


def _generate(sampler: Sampler, prompts: Sequence[str], max_new_tokens: int, temperature: float) -> list[str]:
    samples = sampler.sample_answers(
        list(prompts), k=1, max_new_tokens=max_new_tokens, temperature=temperature, progress=False
    )
    return [sample.answers[0].text for sample in samples]


def cmd_generate(args: argparse.Namespace) -> int:
    sampler = _open(args)
    try:
        prompts = args.prompt
        steered = _generate(sampler, prompts, args.max_new_tokens, args.temperature)
        base = None
        if args.compare and args.adapter:
            with sampler.steering_disabled():
                base = _generate(sampler, prompts, args.max_new_tokens, args.temperature)
    finally:
        _close(sampler)
    for index, prompt in enumerate(prompts):
        print(f">>> {prompt}")
        if base is not None:
            print(f"[base]    {base[index]}")
        print(f"[{'steered' if args.adapter else 'model'}] {steered[index]}\n")
    return EXIT_OK


def _close(sampler: Sampler) -> None:
    """Stop a vLLM engine (a transformers model needs nothing)."""
    close = getattr(sampler, "close", None)
    if close is not None:
        close()


def _replier(sampler: Sampler, max_new_tokens: int) -> Callable[[list[dict[str, str]]], str]:
    """The greedy next assistant turn of a conversation: the transformers model through the local-judge runner,
    a vLLM engine through :meth:`~steering_adapter.runtimes.vllm.VllmSampler.chat`."""
    if isinstance(sampler, TransformersSampler):
        runner = TransformersJudgeBackend(
            sampler.model, sampler.tokenizer, max_new_tokens=max_new_tokens, batch_size=1
        )
        return lambda history: runner.complete(history).text or ""
    return lambda history: sampler.chat([history], max_new_tokens=max_new_tokens)[0].text or ""


def cmd_chat(args: argparse.Namespace) -> int:
    sampler = _open(args)
    try:
        reply = _replier(sampler, args.max_new_tokens)
        print(
            f"steering-adapter chat: one message per line; the model sees the whole conversation. {RESET_COMMAND} "
            "starts a new one; an empty line or Ctrl-D quits.",
            file=sys.stderr,
        )
        history: list[dict[str, str]] = []
        for line in sys.stdin:
            message = line.strip()
            if not message:
                break
            if message == RESET_COMMAND:
                history = []
                print("(new conversation)", file=sys.stderr, flush=True)
                continue
            history.append({"role": "user", "content": message})
            answer = reply(history)
            history.append({"role": "assistant", "content": answer})
            print(answer, flush=True)
    finally:
        _close(sampler)
    return EXIT_OK
