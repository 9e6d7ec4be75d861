"""``steering-adapter-lm-eval``: lm-evaluation-harness's own command, with steering adapters and the offline tasks.

It is ``lm_eval`` (same arguments, same output) after three things:

- ``import steering_adapter``: PEFT knows the ``STEERING`` adapter type, so ``--model hf --model_args
  pretrained=BASE,peft=ADAPTER`` loads a steering adapter the way it loads a LoRA;
- the package's task folder (:data:`~steering_adapter.measure.benchmarks.TASKS_DIR`: ``mmlu_offline``, its four
  categories and 57 subjects, reading ``mmlu/`` from ``$STEERING_ADAPTER_DATASETS`` or ``../shared/datasets``) is
  the ``--include_path`` unless the command names its own (lm-eval takes one folder);
- ``pretrained=`` an embedded model's name (``organism``, ``smollm2-censored``, ``smollm2`` or its
  ``steering-adapter:<name>`` id) becomes that model's local folder.

Example::

    steering-adapter-lm-eval --model hf --model_args pretrained=organism,peft=runs/no-political-refusal/adapter \\
        --tasks mmlu_offline --num_fewshot 5 --limit 20 --batch_size 8
"""

from __future__ import annotations

import sys

# importing any steering_adapter module runs the package's __init__, which registers STEERING with PEFT
from steering_adapter.measure.benchmarks.mmlu import TASKS_DIR
from steering_adapter.models.embedded import is_embedded, resolve_embedded

__all__ = ["lm_eval_arguments", "main"]


def lm_eval_arguments(argv: list[str]) -> list[str]:
    """``argv`` with the task folder on ``--include_path`` and embedded model names resolved in ``--model_args``."""
    argv = list(argv)
    for index, value in enumerate(argv[:-1]):
        if value == "--model_args":
            argv[index + 1] = ",".join(_resolve_pretrained(item) for item in argv[index + 1].split(","))
    if argv and not {"-h", "--help", "--include_path"} & set(argv):
        argv += ["--include_path", str(TASKS_DIR)]
    return argv


def _resolve_pretrained(item: str) -> str:
    key, sep, value = item.partition("=")
    if sep and key.strip() == "pretrained" and is_embedded(value):
        return f"{key}={resolve_embedded(value)}"
    return item


def main() -> None:
    """Run lm-eval's command line with the arguments of :func:`lm_eval_arguments`."""
    from lm_eval.__main__ import cli_evaluate  # lazy: lm-evaluation-harness is the optional ``benchmarks`` extra

    sys.argv = [sys.argv[0], *lm_eval_arguments(sys.argv[1:])]
    cli_evaluate()
