"""Steering adapters saved next to their tiny base models, as the export tests start from them (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from architectures import BLOCK_PATHS, HIDDEN, VOCAB, tiny_config
from transformers import AutoModelForCausalLM

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.models.organism import ORGANISM_DIR, load_organism

LAYERS = (1, 3)
SCALE = -2.5
LAYER_SCALES = {"3": 0.5}
METADATA = {"method": "md", "vector_units": "class_separation"}

# case name -> (architecture, config overrides)
CASES: dict[str, tuple[str, dict]] = {
    "llama": ("llama", {}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "phi3": ("phi3", {}),
    "gpt2": ("gpt2", {}),
    "gpt_neox": ("gpt_neox", {"use_parallel_residual": True}),
    "gpt_neox_sequential": ("gpt_neox", {"use_parallel_residual": False}),
    "gemma2": ("gemma2", {}),
    "gemma3_text": ("gemma3_text", {}),
    "olmo2": ("olmo2", {}),
    "qwen3_moe": ("qwen3_moe", {}),
    "qwen3_next": ("qwen3_next", {}),
}


# The embedded organism (a trained Qwen3, hidden size 256) as a case of its own: real weights, base "organism".
ORGANISM = "organism"


def tiny_base(case: str, seed: int = 0) -> torch.nn.Module:
    """The tiny random model of ``case`` (or the organism) in float32, eval mode."""
    if case == ORGANISM:
        return load_organism()[0]
    arch, overrides = CASES[case]
    torch.manual_seed(seed)
    config = tiny_config(arch, **overrides)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()


def blocks_path(case: str) -> str:
    return "model.layers" if case == ORGANISM else BLOCK_PATHS[CASES[case][0]]


def random_vectors(layers=LAYERS, seed: int = 1, hidden: int = HIDDEN) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(hidden, generator=generator) for layer in layers}


def input_ids(batch: int = 2, length: int = 7, seed: int = 3) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def save_base_and_adapter(
    case: str, root: Path, vectors: dict[int, torch.Tensor] | None = None, **config_fields
) -> tuple[Path, Path, dict[int, torch.Tensor]]:
    """Save the tiny base of ``case`` to ``root/base`` and a steering adapter for it to ``root/adapter``.

    The adapter steers :data:`LAYERS` with α = :data:`SCALE` and :data:`LAYER_SCALES` unless ``config_fields`` say
    otherwise; its ``base_model_name_or_path`` is the saved base folder (``"organism"`` for the organism, whose base
    folder is the shipped one).

    Returns:
        ``(base folder, adapter folder, vectors)``.
    """
    adapter_dir = root / "adapter"
    model = tiny_base(case)
    if case == ORGANISM:
        base_dir, base_name = ORGANISM_DIR, ORGANISM
    else:
        base_dir = root / "base"
        base_name = str(base_dir)
        model.save_pretrained(base_dir)
    vectors = vectors if vectors is not None else random_vectors(hidden=model.config.hidden_size)
    fields = {"scale": SCALE, "layer_scales": LAYER_SCALES, "steering_metadata": dict(METADATA)} | config_fields
    peft_model = adapter_from_vectors(model, vectors, **fields)
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    save_adapter(peft_model, adapter_dir)
    peft_model.unload()
    return base_dir, adapter_dir, vectors


def write_control_vector(
    path: Path, tensors: dict[str, np.ndarray], architecture: str = "controlvector", model_hint: str = "llama"
) -> Path:
    """Write a control vector as repeng does (``uint32`` layer count) holding exactly ``tensors``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_string(f"{architecture}.model_hint", model_hint)
    writer.add_uint32(f"{architecture}.layer_count", len(tensors))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
