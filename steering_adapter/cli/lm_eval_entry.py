"""``steering-adapter-lm-eval``: lm-evaluation-harness's own command, with steering adapters and the offline tasks.

It is ``lm_eval`` (same arguments, same output) after three things:

- ``import steering_adapter``: PEFT knows the ``STEERING`` adapter type, so ``--model hf --model_args
  pretrained=BASE,peft=ADAPTER`` loads a steering adapter the way it loads a LoRA;
- the package's task folder (:data:`~steering_adapter.measure.benchmarks.TASKS_DIR`: ``mmlu_offline``, its four
  categories and 57 subjects, reading ``mmlu/`` from ``$STEERING_ADAPTER_DATASETS`` or ``../shared/datasets``) is
  the ``--include_path`` unless the command names its own (lm-eval takes one folder);
- ``pretrained=`` an embedded model's name (``organism``, ``smollm2-censored``, ``smollm2`` or its
  ``steering-adapter:<name>`` id) becomes that model's local folder;
- a local condition-gated ``peft=`` adapter runs with ``--batch_size 1`` (a gate decides on each sequence's last
  prompt token, and lm-eval's batches are right-padded without an attention mask).

Example::

    steering-adapter-lm-eval --model hf --model_args pretrained=organism,peft=runs/no-political-refusal/adapter \\
        --tasks mmlu_offline --num_fewshot 5 --limit 20 --batch_size 8
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# importing any steering_adapter module runs the package's __init__, which registers STEERING with PEFT
from steering_adapter.measure.benchmarks.mmlu import TASKS_DIR
from steering_adapter.models.embedded import is_embedded, resolve_embedded

__all__ = ["lm_eval_arguments", "main"]


def lm_eval_arguments(argv: list[str]) -> list[str]:
    """``argv`` with embedded model names resolved in ``--model_args`` / ``-a`` (every ``key=value`` token, comma-
    separated or not, ``--model_args=…`` too), the task folder as ``--include_path`` unless one is given, and batch
    size 1 when ``peft=`` names a local condition-gated adapter (lm-eval right-pads batches without an attention
    mask, so a batched gate would be decided on pad tokens; see :mod:`steering_adapter.measure.benchmarks.harness`).
    """
    result: list[str] = []
    in_model_args = False
    for token in argv:
        if token in ("--model_args", "-a"):
            in_model_args = True
        elif token.startswith("--model_args="):
            token, in_model_args = "--model_args=" + _resolved(token.partition("=")[2]), False
        elif token.startswith("-"):
            in_model_args = False
        elif in_model_args:
            token = _resolved(token)
        result.append(token)
    if not result or {"-h", "--help"} & set(result):
        return result
    if not any(token == "--include_path" or token.startswith("--include_path=") for token in result):
        result += ["--include_path", str(TASKS_DIR)]
    if _names_gated_adapter(result):
        result = _without_batch_size(result) + ["--batch_size", "1"]
        print("[steering-adapter-lm-eval] the peft= adapter is condition-gated: --batch_size 1", file=sys.stderr)
    return result


def _resolved(items: str) -> str:
    """One ``key=value[,key=value…]`` token with ``pretrained=`` an embedded model's name made its folder."""
    parts = []
    for item in items.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "pretrained" and is_embedded(value):
            item = f"{key}={resolve_embedded(value)}"
        parts.append(item)
    return ",".join(parts)


def _names_gated_adapter(argv: list[str]) -> bool:
    """Whether a ``peft=`` model argument names a local adapter folder whose config has a condition gate."""
    for token in argv:
        for item in token.removeprefix("--model_args=").split(","):
            key, _, value = item.partition("=")
            config = Path(value) / "adapter_config.json"
            if key.strip() == "peft" and config.is_file():
                return json.loads(config.read_text()).get("condition_layer") is not None
    return False


def _without_batch_size(argv: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--batch_size", "-b"):
            skip = True
        elif not token.startswith("--batch_size="):
            kept.append(token)
    return kept


def main() -> None:
    """Run lm-eval's command line with the arguments of :func:`lm_eval_arguments`."""
    from lm_eval.__main__ import cli_evaluate  # lazy: lm-evaluation-harness is the optional ``benchmarks`` extra

    sys.argv = [sys.argv[0], *lm_eval_arguments(sys.argv[1:])]
    cli_evaluate()
