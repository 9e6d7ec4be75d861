"""vLLM benchmarks on the organism, measured side by side in one run (run in the vLLM environment):

1. steered / unsteered decoding throughput inside one vLLM engine: no adapter (no hooks at all) against an adapter
   on every block, an ablation adapter, and a condition-gated adapter (target: steered ≤ 1.05 × unsteered time);
2. the vLLM sampling backend against the transformers backend: K answers per prompt with their log-probabilities;
3. with ``--compiled``: the unsteered engine in vLLM's default compiled mode against eager mode, i.e. what
   steering's required eager mode costs (one more engine start, with compilation).

    .venv-vllm/bin/python benchmarks/vllm.py [--prompts 64] [--tokens 64] [--repeats 3] [--compiled] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# This file is named vllm.py: keep its folder off the import path so that `import vllm` finds vLLM.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]


def _prompts(n: int) -> list[str]:
    from steering_adapter.models.organism.data import load_examples

    examples = [e.prompt for e in load_examples() if e.split == "heldout"]
    step = max(1, len(examples) // n)
    return examples[::step][:n]


def _adapters(folder: Path) -> dict[str, list[dict]]:
    """Adapter folders on the organism: add on all 6 blocks, ablate on all 6, and a gated add."""
    import torch

    from steering_adapter.runtimes.vllm import write_adapter

    generator = torch.Generator().manual_seed(0)
    every = {layer: torch.randn(256, generator=generator) for layer in range(6)}
    shape = dict(hidden_size=256, num_hidden_layers=6)
    add = write_adapter(folder / "add", every, scale=2.0, **shape)
    ablate = write_adapter(folder / "ablate", every, mode="ablate", **shape)
    gated = write_adapter(
        folder / "gated",
        {layer: v for layer, v in every.items() if layer >= 1},
        condition=torch.randn(256, generator=generator),
        condition_layer=1,
        condition_threshold=0.0,
        scale=2.0,
        **shape,
    )
    return {"add, 6 blocks": [str(add)], "ablate, 6 blocks": [str(ablate)], "gated add, 5 blocks": [str(gated)]}


def _decode_seconds(sampler, ids, tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True, detokenize=False)
    start = time.perf_counter()
    sampler._generate(ids, params, False)
    return time.perf_counter() - start


def steering_overhead(sampler, prompts: list[str], tokens: int, repeats: int, folder: Path) -> list[dict]:
    from steering_adapter.measure.sampling import format_chat, user_conversation

    ids = sampler._token_ids(format_chat(sampler.tokenizer, [user_conversation(p, None) for p in prompts]))
    adapters = _adapters(folder)
    _decode_seconds(sampler, ids, 8)  # warm-up
    times: dict[str, list[float]] = {"unsteered": [], **{name: [] for name in adapters}}
    for _ in range(repeats):  # interleaved, so drift of the shared machine hits every variant alike
        sampler.set_adapters([])
        times["unsteered"].append(_decode_seconds(sampler, ids, tokens))
        for name, specs in adapters.items():
            sampler.set_adapters(specs)
            times[name].append(_decode_seconds(sampler, ids, tokens))
    sampler.set_adapters([])
    base = statistics.median(times["unsteered"])
    total = len(prompts) * tokens
    return [
        {
            "variant": name,
            "seconds": statistics.median(t),
            "tokens_per_s": total / statistics.median(t),
            "ratio": statistics.median(t) / base,
        }
        for name, t in times.items()
    ]


def backends(sampler, prompts: list[str], k: int, tokens: int) -> list[dict]:
    import torch

    from steering_adapter.measure.sampling import sample_answers
    from steering_adapter.models.organism import load_organism

    settings = dict(k=k, temperature=1.0, max_new_tokens=tokens, seed=0, progress=False)
    start = time.perf_counter()
    got = sampler.sample_answers(prompts, **settings)
    vllm_seconds = time.perf_counter() - start
    torch.set_num_threads(os.cpu_count() or 1)
    model, tokenizer = load_organism()
    start = time.perf_counter()
    ref = sample_answers(model, tokenizer, prompts, batch_size=16, **settings)
    hf_seconds = time.perf_counter() - start
    rows = []
    for name, seconds, samples in (("transformers", hf_seconds, ref), ("vllm", vllm_seconds, got)):
        answers = sum(len(s.answers) for s in samples)
        generated = sum(a.num_tokens for s in samples for a in s.answers)
        rows.append(
            {
                "backend": name,
                "seconds": seconds,
                "answers_per_s": answers / seconds,
                "tokens_per_s": generated / seconds,
                "speedup": hf_seconds / seconds,
            }
        )
    return rows


def compiled_cost(prompts: list[str], tokens: int, repeats: int, eager_sampler) -> list[dict]:
    from steering_adapter.models.organism import ORGANISM_DIR
    from steering_adapter.runtimes.vllm import VllmSampler

    start = time.perf_counter()
    compiled = VllmSampler(
        str(ORGANISM_DIR),
        dtype="float32",
        max_model_len=256,
        gated=False,
        enforce_eager=False,
        load_format="auto",
        model_loader_extra_config={},
        worker_extension_cls="",
        logits_processors=None,
    )
    startup = time.perf_counter() - start
    rows = []
    try:
        for name, sampler in (("eager (steering's mode)", eager_sampler), ("compiled (vLLM default)", compiled)):
            from steering_adapter.measure.sampling import format_chat, user_conversation

            ids = sampler._token_ids(format_chat(sampler.tokenizer, [user_conversation(p, None) for p in prompts]))
            _decode_seconds(sampler, ids, 8)
            seconds = statistics.median(_decode_seconds(sampler, ids, tokens) for _ in range(repeats))
            rows.append({"mode": name, "seconds": seconds, "tokens_per_s": len(prompts) * tokens / seconds})
    finally:
        compiled.close()
    for row in rows:
        row["ratio_to_compiled"] = row["seconds"] / rows[-1]["seconds"]
    print(f"compiled engine start: {startup:.1f} s")
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    for row in rows:
        lines.append(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compiled", action="store_true", help="also measure the compiled engine (slow start)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()

    from steering_adapter.models.organism import ORGANISM_DIR
    from steering_adapter.runtimes.vllm import VllmSampler

    prompts = _prompts(args.prompts)
    start = time.perf_counter()
    sampler = VllmSampler(str(ORGANISM_DIR), dtype="float32", max_model_len=256)
    print(f"engine start (eager, steering-ready): {time.perf_counter() - start:.1f} s")
    results: dict[str, list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            results["steering"] = steering_overhead(sampler, prompts, args.tokens, args.repeats, Path(folder))
        print(f"\n## Steered / unsteered decoding in vLLM ({args.prompts} prompts x {args.tokens} tokens, greedy)\n")
        print(_table(results["steering"]))
        results["backends"] = backends(sampler, prompts[:32], args.k, args.tokens)
        print(f"\n## Sampling backends (32 prompts x K={args.k}, temperature 1, up to {args.tokens} tokens)\n")
        print(_table(results["backends"]))
        if args.compiled:
            results["compiled"] = compiled_cost(prompts, args.tokens, args.repeats, sampler)
            print("\n## What eager mode costs (unsteered, same prompts)\n")
            print(_table(results["compiled"]))
    finally:
        sampler.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
