"""Inference overhead of a steering adapter, measured side by side with the `steering-vectors` package's hooks.

Builds a Llama-shaped random model locally (default hidden 512, 8 blocks), steers every block with the same vectors
through (a) a steering adapter and (b) ``steering_vectors.SteeringVector.apply`` hooks, and times, interleaved:
a full forward on a batch, and greedy decoding at batch 1 (KV cache). Prints the median time ratio of each variant
to the unsteered base model. Target on CPU: adapter / base <= 1.02, and adapter no slower than the peer.

Setup (steering-vectors pins transformers < 5 but its hooks work with 5.x, so install it without dependencies):
    pip install --no-deps 'steering-vectors==0.12.2'
    python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steering_adapter import adapter_from_vectors


def build_model(hidden: int, layers: int, vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=vocab,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = build_model(args.hidden, args.layers, args.vocab)
    generator = torch.Generator().manual_seed(1)
    vectors = {i: torch.randn(args.hidden, generator=generator) * 0.01 for i in range(args.layers)}
    steered = adapter_from_vectors(copy.deepcopy(base), vectors, scale=1.0)

    variants: dict[str, object] = {"base": None, "adapter": None}
    try:
        from steering_vectors import SteeringVector

        peer = SteeringVector(layer_activations=dict(vectors), layer_type="decoder_block")
        variants["steering_vectors"] = peer
    except ImportError:
        print("steering-vectors not installed: pip install --no-deps steering-vectors  (peer column skipped)")

    batch = torch.randint(3, args.vocab, (args.batch, args.seq), generator=generator)
    prompt = torch.randint(3, args.vocab, (1, 16), generator=generator)
    gen_kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    def run(variant: str, task: str) -> float:
        if task == "forward":
            work = {"base": lambda: base(batch), "adapter": lambda: steered(input_ids=batch)}
        else:
            work = {
                "base": lambda: base.generate(prompt, **gen_kwargs),
                "adapter": lambda: steered.generate(input_ids=prompt, **gen_kwargs),
            }
        if variant == "steering_vectors":
            with variants["steering_vectors"].apply(base, multiplier=1.0):
                return timed(work["base"])
        return timed(work[variant])

    # Sanity: the adapter and the peer compute the same steered logits.
    with torch.no_grad():
        ours = steered(input_ids=batch).logits
        if "steering_vectors" in variants:
            with variants["steering_vectors"].apply(base, multiplier=1.0):
                theirs = base(batch).logits
            max_diff = (ours - theirs).abs().max().item()
            print(f"adapter vs steering-vectors logits: max |diff| = {max_diff:.2e}")

    results: dict[str, dict[str, float]] = {}
    rng = random.Random(0)
    with torch.no_grad():
        for task in ("forward", "decode"):
            for variant in variants:  # warm-up
                run(variant, task)
            times: dict[str, list[float]] = {variant: [] for variant in variants}
            for _ in range(args.repeats):
                order = list(variants)
                rng.shuffle(order)
                for variant in order:
                    times[variant].append(run(variant, task))
            base_median = statistics.median(times["base"])
            results[task] = {"base_seconds": base_median}
            for variant in variants:
                if variant != "base":
                    results[task][f"{variant}/base"] = statistics.median(times[variant]) / base_median

    print(
        f"model: Llama-shaped hidden={args.hidden} blocks={args.layers}, all blocks steered, "
        f"{args.threads} threads, {args.repeats} interleaved repeats (median)"
    )
    print(f"{'task':<38} {'base (s)':>10} {'adapter/base':>14} {'steering_vectors/base':>22}")
    labels = {
        "forward": f"forward batch {args.batch}x{args.seq}",
        "decode": f"greedy decode b=1, {args.new_tokens} tok",
    }
    for task, row in results.items():
        peer = row.get("steering_vectors/base")
        peer_text = f"{peer:>22.3f}" if peer is not None else f"{'n/a':>22}"
        print(f"{labels[task]:<38} {row['base_seconds']:>10.4f} {row['adapter/base']:>14.3f} {peer_text}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
