"""Tiny random-weight models of every architecture the steering tuner supports (no downloads)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

VOCAB = 128
HIDDEN = 32
LAYERS = 4

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# model_type -> extra config fields
_ARCHS: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 8},
    "qwen3_moe": {
        "head_dim": 8,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
    "qwen3_next": {
        "head_dim": 8,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 16,
        "shared_expert_intermediate_size": 16,
        "linear_num_value_heads": 4,
        "linear_num_key_heads": 2,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "linear_conv_kernel_dim": 2,
        "full_attention_interval": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
    "gemma2": {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    "phi3": {},
    "olmo2": {},
    "gpt2": {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": 4, "n_positions": 128},
    "gpt_neox": {"rotary_pct": 0.5},
}

ARCHITECTURES = tuple(_ARCHS)
# Where each architecture keeps its decoder blocks.
BLOCK_PATHS = {arch: "model.layers" for arch in ARCHITECTURES} | {
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}


_GPT2_NAMES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "max_position_embeddings": "n_positions"}


def tiny_config(arch: str, **overrides):
    """A transformers config of ``arch`` (hidden size 32, 4 blocks unless ``overrides`` say otherwise).

    ``overrides`` use the Llama field names (``hidden_size``, ``num_hidden_layers``, ...); for GPT-2 they are renamed
    (``n_embd``, ``n_layer``, ``n_positions``) and the fields it has no equivalent for are dropped.
    """
    fields = dict(_COMMON) | _ARCHS[arch] | overrides
    if arch == "gpt2":
        for name, gpt2_name in _GPT2_NAMES.items():
            if name in overrides:
                fields[gpt2_name] = overrides[name]
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads", "head_dim"):
            fields.pop(key, None)
        fields["n_head"] = fields.pop("num_attention_heads")
        fields.pop("max_position_embeddings")
    return AutoConfig.for_model(arch, **fields)


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A tiny random-weight causal LM of ``arch`` in eval mode (weights are deterministic in ``seed``)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=dtype, attn_implementation="eager")
    return model.eval()


def tiny_multimodal_model(seed: int = 0) -> PreTrainedModel:
    """A tiny Gemma3 image-text model: a SigLIP vision tower with as many blocks as the text decoder."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(_COMMON) | _ARCHS["gemma3_text"]
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config).eval()
