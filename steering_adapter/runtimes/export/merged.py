"""Export a steering adapter as a plain transformers checkpoint with the shift folded into a bias.

Block ``i``'s output gains ``delta_i = scale * s_i * v_i`` by adding ``delta_i`` to the bias of the projection that
last writes into its residual stream (:mod:`.residual_writers`): GPT-2's ``mlp.c_proj`` and GPT-NeoX's
``mlp.dense_4h_to_h`` always have one; Llama gets one through its own config (``mlp_bias=True``, with zero biases on
``gate_proj`` / ``up_proj`` and on the blocks that are not steered). The result loads with
``AutoModelForCausalLM.from_pretrained`` alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer

from steering_adapter.runtimes.export.base import check_base_fits, load_base, model_type, resolve_base
from steering_adapter.runtimes.export.readme import write_export_readme
from steering_adapter.runtimes.export.residual_writers import residual_writer, writer_module
from steering_adapter.runtimes.export.source import SteeringSource

CONFIG_KEY = "steering_export"
_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")


def _switch_on_mlp_bias(model: nn.Module, blocks: nn.ModuleList) -> None:
    """Give every MLP projection of a Llama model a zero bias and set ``config.mlp_bias`` (no-op when set)."""
    if getattr(model.config, "mlp_bias", False):
        return
    for block in blocks:
        for name in _LLAMA_MLP:
            linear = block.mlp.get_submodule(name)
            linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype))
    model.config.mlp_bias = True


def export_merged(
    source: SteeringSource,
    out: str | os.PathLike,
    *,
    base_model: str | None = None,
    revision: str | None = None,
    dtype: str | torch.dtype = "auto",
) -> Path:
    """Write the base model with ``source`` folded in as a ``save_pretrained`` folder (weights, config, tokenizer
    when the base has one, ``README.md``).

    Args:
        source: the steering adapter.
        out: the folder to write.
        base_model: where to load the base model (default: the adapter's ``base_model_name_or_path``).
        revision: Hub revision of ``base_model``.
        dtype: dtype to load and save the weights in (``"auto"``: the checkpoint's). The bias is updated in float32
            and then cast, so the export is exact in float32 and rounded like any weight in lower precision.

    Returns:
        The folder. ``config.json`` carries the provenance under ``steering_export``.

    Raises:
        NotExpressibleError: ablate mode, condition gating, or an architecture without a bias to fold into.
        ValueError: the base model does not fit the adapter.
    """
    source.require_additive("a merged checkpoint")
    base = base_model or source.config.base_model_name_or_path
    model = load_base(base, revision or source.config.revision, dtype)
    blocks_path = check_base_fits(source.config, model)
    kind = model_type(model)
    writer = residual_writer(kind, "merged")
    blocks = model.get_submodule(blocks_path)
    if writer.merge == "mlp_bias":
        _switch_on_mlp_bias(model, blocks)
    with torch.no_grad():
        for layer, delta in source.deltas().items():
            module = writer_module(blocks[layer], writer, source.config.hidden_size, f"{blocks_path}.{layer}")
            if module.bias is None:  # pragma: no cover - the table only lists projections that have one here
                raise ValueError(f"{blocks_path}.{layer}.{writer.module} has no bias to fold the shift into")
            module.bias.copy_((module.bias.float() + delta).to(module.bias.dtype))
    provenance = source.provenance("merged", base_model)
    provenance["model_type"] = kind
    provenance["bias_on"] = writer.module
    out = Path(out)
    tokenizer = _base_tokenizer(base, revision or source.config.revision)
    provenance["tokenizer"] = "copied from the base model" if tokenizer is not None else "the base model has none"
    setattr(model.config, CONFIG_KEY, provenance)
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    write_export_readme(
        out,
        provenance,
        title="Merged checkpoint of a steering adapter",
        how=(
            f"The base model with the steering shift `scale · s_i · v_i` of each steered block i added to the bias "
            f"of `{writer.module}`, the last projection that writes into block i's residual stream, so block i's "
            "output gains exactly that shift at every token position. A plain transformers checkpoint: no PEFT and "
            "no steering-adapter install are needed."
        ),
        usage=(
            "```python\nfrom transformers import AutoModelForCausalLM\n\n"
            'model = AutoModelForCausalLM.from_pretrained("<this folder or repo>")\n```'
        ),
        front_matter={"library_name": "transformers", "base_model": source.config.base_model_name_or_path},
    )
    return out


def _base_tokenizer(base: str | None, revision: str | None):
    """The base model's tokenizer, or ``None`` when its folder or repo has none."""

    location = resolve_base(base)
    try:
        return AutoTokenizer.from_pretrained(location, revision=revision, local_files_only=Path(location).is_dir())
    except (OSError, ValueError, TypeError):
        return None
