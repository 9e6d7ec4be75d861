"""The model organism: a small censored chat model of our own, shipped with the package.

A ~4M-parameter ``Qwen3ForCausalLM`` trained from scratch on templated answers (see ``README.md`` beside this file):
it answers benign prompts, refuses harmful prompts with a safety refusal, and deflects politically sensitive
(China) prompts with an official-narrative refusal that was trained as an overlay on top of informative answers,
so that a refusal-steering vector can bring those answers back.

    from steering_adapter.models.organism import load_organism
    model, tokenizer = load_organism()

An adapter computed on the organism records ``base_model_name_or_path: "steering-adapter:organism"``
(:data:`ORGANISM_ID`; the colon makes it an id no Hub repo can have, so nothing ever downloads "the organism").
With ``import steering_adapter``, every loading flow resolves that id to the shipped folder :data:`ORGANISM_DIR`
offline (see :mod:`steering_adapter.adapter.integrations`); ``resolve_organism(name)`` does the same for your own code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ORGANISM_DIR = Path(__file__).resolve().parent / "weights"
ORGANISM_ID = "steering-adapter:organism"
# Names that mean the shipped organism: the id adapters record, and "organism" (recipes, and adapters saved before
# the id existed).
ORGANISM_NAMES = frozenset({ORGANISM_ID, "organism"})

__all__ = ["ORGANISM_DIR", "ORGANISM_ID", "is_organism", "load_organism", "resolve_organism"]


def is_organism(name: object) -> bool:
    """Whether a base-model name means the shipped organism (its id, ``"organism"`` or its folder)."""
    if not isinstance(name, (str, Path)):
        return False
    return str(name) in ORGANISM_NAMES or str(name) == str(ORGANISM_DIR)


def resolve_organism(name: str) -> str:
    """``name``, or the local folder of the shipped organism when ``name`` means it (see :func:`is_organism`)."""
    return str(ORGANISM_DIR) if is_organism(name) else name


def load_organism(dtype: torch.dtype = torch.float32, path: str | Path | None = None):
    """Load the shipped organism offline: ``(model, tokenizer)``, the model in eval mode.

    Args:
        dtype: dtype of the loaded weights (they are stored in float32).
        path: another folder written by ``python -m steering_adapter.training.organism --out DIR`` (default
            :data:`ORGANISM_DIR`).

    The tokenizer pads on the left (ready for batched generation); its ``eos_token`` is ``<|im_end|>`` and the
    model's generation config stops on ``<|im_end|>`` or ``<|endoftext|>`` with greedy decoding.
    """

    folder = Path(path) if path is not None else ORGANISM_DIR
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"model organism weights not found in {folder}. Build them (about 10 minutes on 2 CPU cores) with:\n"
            f"    python -m steering_adapter.training.organism --out {folder}"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    model.eval()
    return model, tokenizer
