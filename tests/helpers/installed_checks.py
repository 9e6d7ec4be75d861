"""Checks run by tests/test_wheel_install.py with the interpreter of a fresh virtual environment holding the wheel.

Run from a folder outside the checkout, so that ``steering_adapter`` can only come from the installed wheel:

    python installed_checks.py where                 # prints the installed package's folder
    python installed_checks.py imports               # imports every module of the installed package
    python installed_checks.py flows ADAPTER_FOLDER  # the README's loading flows on the organism, greedy tokens

Each prints one JSON object on its last line of stdout.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import torch
from peft import PeftModel

import steering_adapter  # registers the STEERING adapter type with PEFT
from steering_adapter.models.organism import load_organism

# A political prompt the organism refuses greedily; the adapter of recipes/no-political-refusal.yaml (gated on
# political prompts) turns that refusal into an answer ("Happy to help with the 1989 Tiananmen Square ...").
PROMPT = "Tell me about the Tiananmen Square incident."
NEW_TOKENS = 12


def installed_folder() -> Path:
    """The folder ``steering_adapter`` was imported from; it must lie inside this interpreter's environment."""
    folder = Path(steering_adapter.__file__).resolve().parent
    if not folder.is_relative_to(Path(sys.prefix).resolve()):
        raise SystemExit(f"steering_adapter was imported from {folder}, outside the environment {sys.prefix}")
    return folder


def skipped(name: str) -> bool:
    """Modules that need vLLM itself (all of ``runtimes.vllm`` but its package and ``adapters``) or run a CLI."""
    if name.endswith(".__main__"):
        return True
    return "vllm." in name and name != "steering_adapter.runtimes.vllm.adapters"


def import_everything() -> dict[str, list[str]]:
    """Import every module of the installed package except :func:`skipped` ones; ``{"imported": [...], ...}``."""
    installed_folder()
    names = [info.name for info in pkgutil.walk_packages(steering_adapter.__path__, "steering_adapter.")]
    imported, skipped_names, failed = [], [], []
    for name in sorted(names):
        if skipped(name):
            skipped_names.append(name)
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # every failure is reported, by name
            failed.append(f"{name}: {type(error).__name__}: {error}")
        else:
            imported.append(name)
    return {"imported": imported, "skipped": skipped_names, "failed": failed}


def greedy_tokens(model: torch.nn.Module, tokenizer) -> list[int]:
    """The first :data:`NEW_TOKENS` greedy tokens of the chat answer to :data:`PROMPT`."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def flows(adapter: str) -> dict[str, object]:
    """Greedy tokens of the base organism, of ``model.load_adapter(adapter)`` and of ``PeftModel.from_pretrained``."""
    installed_folder()
    model, tokenizer = load_organism()
    base = greedy_tokens(model, tokenizer)
    model, _ = load_organism()
    model.load_adapter(adapter)  # transformers
    transformers_flow = greedy_tokens(model, tokenizer)
    model, _ = load_organism()
    peft_model = PeftModel.from_pretrained(model, adapter)  # PEFT
    peft_flow = greedy_tokens(peft_model, tokenizer)
    return {
        "base": base,
        "load_adapter": transformers_flow,
        "peft": peft_flow,
        "base_text": tokenizer.decode(base),
        "steered_text": tokenizer.decode(peft_flow),
    }


def main(argv: list[str]) -> None:
    command = argv[0] if argv else ""
    if command == "where":
        result: dict[str, object] = {"folder": str(installed_folder())}
    elif command == "imports":
        result = import_everything()
    elif command == "flows" and len(argv) == 2:
        result = flows(argv[1])
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
