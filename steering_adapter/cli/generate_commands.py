"""``steering-adapter generate`` (answer prompts) and ``steering-adapter chat`` (multi-turn, stdin) with adapters."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from steering_adapter.cli.exit_codes import EXIT_OK
from steering_adapter.cli.model_loading import check_model_and_adapters, load_model_and_adapters, placement_overrides
from steering_adapter.measure.judges.backends import TransformersJudgeBackend
from steering_adapter.measure.sampling.generation import sample_answers
from steering_adapter.tuner.model import steering_disabled

__all__ = ["RESET_COMMAND", "cmd_chat", "cmd_generate"]

RESET_COMMAND = "/reset"


def _generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float) -> list[str]:
    samples = sample_answers(
        model, tokenizer, list(prompts), k=1, max_new_tokens=max_new_tokens, temperature=temperature, progress=False
    )
    return [sample.answers[0].text for sample in samples]


def cmd_generate(args: argparse.Namespace) -> int:
    check_model_and_adapters(args.model, args.adapter or [])  # a missing folder fails before the model loads
    model, tokenizer = load_model_and_adapters(
        args.model, args.adapter or [], args.scale, None, placement_overrides(args)
    )
    prompts = args.prompt
    steered = _generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature)
    base = None
    if args.compare and args.adapter:
        with steering_disabled(model):
            base = _generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature)
    for index, prompt in enumerate(prompts):
        print(f">>> {prompt}")
        if base is not None:
            print(f"[base]    {base[index]}")
        print(f"[{'steered' if args.adapter else 'model'}] {steered[index]}\n")
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    check_model_and_adapters(args.model, args.adapter or [])  # a missing folder fails before the model loads
    model, tokenizer = load_model_and_adapters(
        args.model, args.adapter or [], args.scale, None, placement_overrides(args)
    )
    # greedy chat completion of the whole conversation (the same runner as a local judge model)
    runner = TransformersJudgeBackend(model, tokenizer, max_new_tokens=args.max_new_tokens, batch_size=1)
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
        answer = runner.complete(history).text or ""
        history.append({"role": "assistant", "content": answer})
        print(answer, flush=True)
    return EXIT_OK
