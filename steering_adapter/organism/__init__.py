"""The model organism: a small censored chat model of our own, shipped with the package.

A ~4M-parameter ``Qwen3ForCausalLM`` trained from scratch on templated answers (see ``README.md`` beside this file):
it answers benign prompts, refuses harmful prompts with a safety refusal, and deflects politically sensitive
(China) prompts with an official-narrative refusal that was trained as an overlay on top of informative answers,
so that a refusal-steering vector can bring those answers back.

    from steering_adapter.organism import load_organism
    model, tokenizer = load_organism()
"""

from __future__ import annotations

from pathlib import Path

import torch

ORGANISM_DIR = Path(__file__).resolve().parent / "weights"

__all__ = ["ORGANISM_DIR", "load_organism"]


def load_organism(dtype: torch.dtype = torch.float32, path: str | Path | None = None):
    """Load the shipped organism offline: ``(model, tokenizer)``, the model in eval mode.

    Args:
        dtype: dtype of the loaded weights (they are stored in float32).
        path: another folder written by ``python -m steering_adapter.organism.train --out DIR`` (default
            :data:`ORGANISM_DIR`).

    The tokenizer pads on the left (ready for batched generation); its ``eos_token`` is ``<|im_end|>`` and the
    model's generation config stops on ``<|im_end|>`` or ``<|endoftext|>`` with greedy decoding.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path) if path is not None else ORGANISM_DIR
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"model organism weights not found in {folder}. Build them (about 10 minutes on 2 CPU cores) with:\n"
            f"    python -m steering_adapter.organism.train --out {folder}"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    model.eval()
    return model, tokenizer
