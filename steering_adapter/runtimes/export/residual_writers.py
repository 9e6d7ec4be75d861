"""The last module that writes into the residual stream in each decoder block, per architecture.

A steering adapter adds ``delta_i`` to the output of block ``i``. Where a block ends with ``h + W(...)`` (the MLP's
output projection added to the residual stream with nothing after it), a bias ``delta_i`` on that projection adds
exactly ``delta_i`` to the block output at every position: that is how the ``lora`` and ``merged`` exports work.
Each entry below was read from the architecture's transformers modeling code (5.23) and is checked numerically by
tests/runtimes/test_export_weights.py; an architecture missing here is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from steering_adapter.runtimes.export.source import NotExpressibleError


@dataclass(frozen=True)
class ResidualWriter:
    """Where and how a block-output shift becomes a bias.

    Attributes:
        module: path of the projection inside the block, e.g. ``"mlp.down_proj"``.
        merge: how a merged checkpoint holds the bias: ``"bias"`` (the projection always has one), ``"mlp_bias"``
            (switched on through the config's ``mlp_bias``, with zero biases on the other MLP projections), or
            ``None`` (the architecture has no way to hold it).
        residual: the line of the block's forward that makes the bias exact.
    """

    module: str
    merge: str | None
    residual: str


_LLAMA_LIKE = "hidden_states = residual + self.mlp(post_attention_layernorm(hidden_states))"

WRITERS: dict[str, ResidualWriter] = {
    "llama": ResidualWriter("mlp.down_proj", "mlp_bias", _LLAMA_LIKE),
    "mistral": ResidualWriter("mlp.down_proj", None, _LLAMA_LIKE),
    "qwen2": ResidualWriter("mlp.down_proj", None, _LLAMA_LIKE),
    "qwen3": ResidualWriter("mlp.down_proj", None, _LLAMA_LIKE),
    "phi3": ResidualWriter("mlp.down_proj", None, "hidden_states = residual + resid_mlp_dropout(self.mlp(...))"),
    "gpt2": ResidualWriter("mlp.c_proj", "bias", "hidden_states = residual + mlp(ln_2(hidden_states))"),
    "gpt_neox": ResidualWriter(
        "mlp.dense_4h_to_h",
        "bias",
        "hidden_states = mlp_output + attn_output (+ hidden_states with use_parallel_residual)",
    ),
}

# Architectures whose last residual writer cannot carry the shift exactly, and why.
_POST_NORM = (
    "its MLP output passes through post_feedforward_layernorm before it is added to the residual stream, so a bias "
    "on the MLP's output projection would be normalised instead of added"
)
_MOE = "its MLP is a routed mixture of experts, so no single projection writes every token's MLP output"
NOT_EXACT: dict[str, str] = {
    "gemma2": _POST_NORM,
    "gemma3": _POST_NORM,
    "gemma3_text": _POST_NORM,
    "olmo2": _POST_NORM,
    "qwen3_moe": _MOE,
    "qwen3_next": _MOE,
}

_MERGE_ALTERNATIVES = "export it with --format lora or --format gguf instead"


def residual_writer(model_type: str, export_format: str) -> ResidualWriter:
    """The residual writer of ``model_type`` for a ``"lora"`` or ``"merged"`` export.

    Raises:
        NotExpressibleError: the architecture cannot carry the shift exactly (with the reason), is not verified, or
            (for ``"merged"``) has no bias to fold it into.
    """
    if model_type in NOT_EXACT:
        raise NotExpressibleError(
            f"a {export_format} export is not exact for model_type {model_type!r}: {NOT_EXACT[model_type]}. "
            "Use the steering adapter itself, or --format gguf for llama.cpp"
        )
    writer = WRITERS.get(model_type)
    if writer is None:
        raise NotExpressibleError(
            f"a {export_format} export is not verified for model_type {model_type!r}; verified: "
            f"{', '.join(sorted(WRITERS))}"
        )
    if export_format == "merged" and writer.merge is None:
        raise NotExpressibleError(
            f"a merged export needs a bias on {writer.module}, which model_type {model_type!r} cannot have (its "
            f"transformers code builds that projection without a bias and no config field switches one on); "
            f"{_MERGE_ALTERNATIVES}"
        )
    return writer


def writer_module(block: nn.Module, writer: ResidualWriter, hidden_size: int, name: str) -> nn.Module:
    """The projection ``writer.module`` of ``block``, checked to write ``hidden_size`` features.

    Raises:
        NotExpressibleError: the block has no such linear projection, or it does not write ``hidden_size`` features.
    """
    try:
        module = block.get_submodule(writer.module)
    except AttributeError:
        module = None
    weight = getattr(module, "weight", None)
    if module is None or weight is None or weight.ndim != 2:
        raise NotExpressibleError(f"{name}.{writer.module} is not a linear projection in this model")
    out_features = weight.shape[1] if type(module).__name__ == "Conv1D" else weight.shape[0]
    if out_features != hidden_size:
        raise NotExpressibleError(
            f"{name}.{writer.module} writes {out_features} features, not the hidden size {hidden_size}"
        )
    return module


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` stores its weight transposed (``[in, out]``)."""
    return type(module).__name__ == "Conv1D"
