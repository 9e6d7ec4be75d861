"""Quickstart: build a steering adapter from vectors, save it, load it back with the usual calls, see its effect.

Runs in seconds on a CPU with no downloads: the model is a small Llama-shaped network built locally from a config
(random weights), so the "behaviour" here is a direction in its residual stream rather than refusal. The full
refusal pipeline (sampling, judging, estimation, selection) builds on exactly these calls.

    python examples/quickstart.py [--out runs/quickstart]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from peft import PeftModel
from transformers import LlamaConfig, LlamaForCausalLM

import steering_adapter  # registers the STEERING adapter type with PEFT
from steering_adapter import adapter_from_vectors, compute_direction, save_adapter


def small_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def block_outputs(model, ids: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """Last-token output of each block in ``layers`` (hidden_states[i + 1] is block i's output)."""
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    return {layer: states[layer + 1][:, -1, :] for layer in layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/quickstart", help="folder for the adapter (default: runs/quickstart)")
    args = parser.parse_args()

    model = small_model()
    layers = [2, 3, 4]
    generator = torch.Generator().manual_seed(0)
    # Two "prompt sets": sequences drawn from two disjoint halves of the vocabulary play refused vs complied.
    group_a = torch.randint(3, 256, (32, 12), generator=generator)
    group_b = torch.randint(256, 512, (32, 12), generator=generator)
    acts_a, acts_b = block_outputs(model, group_a, layers), block_outputs(model, group_b, layers)
    vectors = {layer: compute_direction(acts_a[layer], acts_b[layer], method="md") for layer in layers}

    # 1. attach: alpha = -1 moves group-a activations onto group b along v (the mean difference)
    steered = adapter_from_vectors(
        model, vectors, scale=-1.0, steering_metadata={"method": "md", "note": "quickstart demo"}
    )
    folder = save_adapter(steered, args.out)
    print(f"saved adapter to {folder}: {sorted(os.listdir(folder))}")
    print(
        json.dumps(
            {
                k: v
                for k, v in json.load(open(os.path.join(folder, "adapter_config.json"))).items()
                if k in ("peft_type", "layers", "scale", "mode", "hidden_size", "num_hidden_layers")
            }
        )
    )

    # 2. load it back the usual ways, on a fresh copy of the base model
    base = steered.unload()
    fresh = small_model()
    fresh.load_adapter(folder, adapter_name="demo")  # transformers
    peft_model = PeftModel.from_pretrained(small_model(), folder)  # PEFT

    # 3. effect: projection of group-a activations on the direction, before and after
    probe = torch.randint(3, 256, (8, 12), generator=generator)
    print("\nlayer  mean proj. on v (base)  (adapter via load_adapter)  (adapter via PeftModel)   group b")
    before = block_outputs(base, probe, layers)
    after_tf = block_outputs(fresh, probe, layers)
    after_peft = block_outputs(peft_model, probe, layers)
    target = block_outputs(base, group_b[:8], layers)
    for layer in layers:
        unit = vectors[layer] / vectors[layer].norm()
        row = [(acts[layer] @ unit).mean().item() for acts in (before, after_tf, after_peft, target)]
        print(f"{layer:>5}  {row[0]:>22.3f}  {row[1]:>27.3f}  {row[2]:>24.3f}  {row[3]:>8.3f}")

    with torch.no_grad():
        plain_tokens = base.generate(probe[:1], max_new_tokens=10, do_sample=False)
        steered_tokens = peft_model.generate(input_ids=probe[:1], max_new_tokens=10, do_sample=False)
    print(f"\ngreedy continuation, base:    {plain_tokens[0, -10:].tolist()}")
    print(f"greedy continuation, steered: {steered_tokens[0, -10:].tolist()}")
    print(f"\nsteering_adapter {steering_adapter.__version__}: done")


if __name__ == "__main__":
    main()
