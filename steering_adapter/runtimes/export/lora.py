"""Export a steering adapter as a plain PEFT LoRA adapter that stock PEFT loads without this package.

Block ``i``'s output gains ``delta_i = scale * s_i * v_i`` through the bias of the projection that last writes into
its residual stream (``mlp.down_proj`` for Llama-like blocks, see :mod:`.residual_writers`): a rank-1 LoRA with
zero ``lora_A`` / ``lora_B`` weights and ``lora_B.bias = delta_i``. PEFT adds ``lora_B(lora_A(x)) * scaling`` to the
projection's output, bias included, with ``scaling = lora_alpha / r``; ``r = lora_alpha = 1`` makes the scaling
exactly 1, so the output gains exactly ``delta_i`` at every position.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from steering_adapter.runtimes.export.base import base_skeleton, check_base_fits, model_type
from steering_adapter.runtimes.export.readme import write_export_readme
from steering_adapter.runtimes.export.residual_writers import is_conv1d, residual_writer, writer_module
from steering_adapter.runtimes.export.source import SteeringSource

LORA_RANK = 1
LORA_ALPHA = 1
METADATA_KEY = "steering_export"


def export_lora(
    source: SteeringSource, out: str | os.PathLike, *, base_model: str | None = None, revision: str | None = None
) -> Path:
    """Write ``source`` as a PEFT LoRA adapter folder (``adapter_config.json``, ``adapter_model.safetensors``,
    ``README.md``).

    Args:
        source: the steering adapter.
        out: the folder to write.
        base_model: where to read the base model's config (default: the adapter's ``base_model_name_or_path``);
            the LoRA config keeps the adapter's ``base_model_name_or_path``.
        revision: Hub revision of ``base_model``.

    Returns:
        The folder. The provenance is in the safetensors metadata (key ``steering_export``, JSON) and the README.

    Raises:
        NotExpressibleError: ablate mode, condition gating, or an architecture where the bias is not exact.
        ValueError: the base model does not fit the adapter.
    """

    source.require_additive("a LoRA adapter")
    base = base_model or source.config.base_model_name_or_path
    skeleton = base_skeleton(base, revision or source.config.revision)
    blocks_path = check_base_fits(source.config, skeleton)
    kind = model_type(skeleton)
    writer = residual_writer(kind, "lora")
    blocks = skeleton.get_submodule(blocks_path)
    tensors: dict[str, torch.Tensor] = {}
    targets: list[str] = []
    conv1d = False
    for layer, delta in source.deltas().items():
        name = f"{blocks_path}.{layer}"
        module = writer_module(blocks[layer], writer, source.config.hidden_size, name)
        conv1d = is_conv1d(module)
        in_features = module.weight.shape[0] if conv1d else module.weight.shape[1]
        target = f"{name}.{writer.module}"
        targets.append(target)
        prefix = f"base_model.model.{target}"
        tensors[f"{prefix}.lora_A.weight"] = torch.zeros(LORA_RANK, in_features, dtype=torch.float32)
        tensors[f"{prefix}.lora_B.weight"] = torch.zeros(source.config.hidden_size, LORA_RANK, dtype=torch.float32)
        tensors[f"{prefix}.lora_B.bias"] = delta.contiguous()
    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        lora_bias=True,
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
        base_model_name_or_path=source.config.base_model_name_or_path,
        revision=source.config.revision,
        inference_mode=True,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    provenance = source.provenance("lora", base_model)
    provenance["model_type"] = kind
    provenance["bias_on"] = writer.module
    save_file(
        tensors,
        str(out / "adapter_model.safetensors"),
        metadata={"format": "pt", METADATA_KEY: json.dumps(provenance, sort_keys=True)},
    )
    write_export_readme(
        out,
        provenance,
        title="PEFT LoRA export of a steering adapter",
        how=(
            f"A rank-{LORA_RANK} LoRA (lora_alpha={LORA_ALPHA}, so PEFT's scaling is exactly 1) on "
            f"`{writer.module}` of each steered block, with zero `lora_A` / `lora_B` weights and `lora_B.bias` = "
            "the steering shift `scale · s_i · v_i`: block i's output gains exactly that shift at every token "
            "position. Stock PEFT loads it; no steering-adapter install is needed."
        ),
        usage=(
            "```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{source.config.base_model_name_or_path}")\n'
            'model = PeftModel.from_pretrained(model, "<this folder or repo>")\n```'
        ),
        front_matter={"library_name": "peft", "base_model": source.config.base_model_name_or_path},
    )
    return out
