"""vLLM benchmarks on the organism, measured side by side in one run (run in the vLLM environment):

1. steered / no-adapter decoding throughput inside one compiled steering engine (vLLM's default mode, the steering
   built into the graph): an adapter on every block, an ablation adapter and a condition-gated adapter;
2. the vLLM sampling backend against the transformers backend: K answers per prompt with their log-probabilities;
3. with ``--compiled``: per batch size, a plain compiled vLLM engine (no steering installed) against the compiled
   steering engine and an eager steering engine (forward hooks), each adapter; target: compiled steered ≤ 1.05 × the
   plain engine's time. The last line is ``compiled steered/unsteered: add=<r> ablate=<r> gated=<r>`` (the largest
   batch).

    .venv-vllm/bin/python benchmarks/vllm.py [--prompts 64] [--tokens 64] [--repeats 3] [--compiled]
        [--batch-sizes 1 8 64] [--random-llama] [--json out.json]

``--random-llama`` is the prepared GPU run (CUDA graphs): the same comparison on a random Llama-shaped 1.2 B model in
bfloat16 (nothing downloaded); nothing depends on it.
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


def _adapters(folder: Path, hidden: int, layers: int) -> dict[str, list[dict]]:
    """Adapter folders for a model of ``layers`` blocks: add on every block, ablate on every block, and a gated add
    (condition at block 1, steering blocks 1..)."""
    import torch

    from steering_adapter.runtimes.vllm import write_adapter

    generator = torch.Generator().manual_seed(0)
    every = {layer: torch.randn(hidden, generator=generator) for layer in range(layers)}
    shape = dict(hidden_size=hidden, num_hidden_layers=layers)
    add = write_adapter(folder / "add", every, scale=2.0, **shape)
    ablate = write_adapter(folder / "ablate", every, mode="ablate", **shape)
    gated = write_adapter(
        folder / "gated",
        {layer: v for layer, v in every.items() if layer >= 1},
        condition=torch.randn(hidden, generator=generator),
        condition_layer=1,
        condition_threshold=0.0,
        scale=2.0,
        **shape,
    )
    return {"add": [str(add)], "ablate": [str(ablate)], "gated": [str(gated)]}


class Model:
    """The benchmarked model: its folder, shape and the engine settings every engine of a run shares."""

    def __init__(self, folder: str, hidden: int, layers: int, **settings) -> None:
        self.folder, self.hidden, self.layers, self.settings = folder, hidden, layers, settings


def organism_model() -> Model:
    from steering_adapter.models.organism import ORGANISM_DIR

    return Model(str(ORGANISM_DIR), 256, 6, dtype="float32", max_model_len=256)


def random_llama(folder: Path) -> Model:
    """A Llama-shaped model with random weights (hidden 2048, 16 blocks, ~1.2 B parameters, bfloat16) and the
    organism's tokenizer, for the GPU run (CUDA graphs): nothing is downloaded."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from steering_adapter.models.organism import ORGANISM_DIR

    for name in Path(ORGANISM_DIR).iterdir():
        if name.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
            shutil.copy(name, folder / name.name)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(ORGANISM_DIR))
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    # three engines share the GPU
    return Model(str(folder), 2048, 16, dtype="bfloat16", max_model_len=512, gpu_memory_utilization=0.25)


def _decode_seconds(sampler, ids, tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True, detokenize=False)
    start = time.perf_counter()
    sampler._generate(ids, params, False)
    return time.perf_counter() - start


def steering_overhead(
    sampler, model: Model, prompts: list[str], tokens: int, repeats: int, folder: Path
) -> list[dict]:
    from steering_adapter.measure.sampling import format_chat, user_conversation

    ids = sampler._token_ids(format_chat(sampler.tokenizer, [user_conversation(p, None) for p in prompts]))
    adapters = _adapters(folder, model.hidden, model.layers)
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


def _plain_engine(model: Model, **settings):
    """A vLLM engine without steering (vLLM's own loader, no tracker, no worker extension)."""
    from steering_adapter.runtimes.vllm import VllmSampler

    return VllmSampler(
        model.folder,
        gated=False,
        load_format="auto",
        model_loader_extra_config={},
        worker_extension_cls="",
        logits_processors=None,
        **model.settings,
        **settings,
    )


def compiled_modes(
    model: Model, prompts: list[str], tokens: int, repeats: int, steering, folder: Path, sizes
) -> list[dict]:
    """Decoding time of a plain compiled engine, the compiled steering engine (``steering``) and an eager steering
    engine, per batch size, each adapter, interleaved repeats (drift of the shared machine hits every variant alike).
    """
    from steering_adapter.measure.sampling import format_chat, user_conversation
    from steering_adapter.runtimes.vllm import VllmSampler

    start = time.perf_counter()
    plain = _plain_engine(model, enforce_eager=False)
    print(f"plain compiled engine start: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    eager = VllmSampler(model.folder, enforce_eager=True, **model.settings)
    print(f"eager steering engine start: {time.perf_counter() - start:.1f} s")
    adapters = _adapters(folder, model.hidden, model.layers)
    rows = []
    try:
        for size in sizes:
            ids = steering._token_ids(
                format_chat(steering.tokenizer, [user_conversation(p, None) for p in prompts[:size]])
            )
            for engine in (plain, steering, eager):
                _decode_seconds(engine, ids, 8)  # warm-up
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(repeats):
                times.setdefault(("plain compiled", "unsteered"), []).append(_decode_seconds(plain, ids, tokens))
                for mode, engine in (("compiled", steering), ("eager", eager)):
                    engine.set_adapters([])
                    times.setdefault((mode, "no adapter"), []).append(_decode_seconds(engine, ids, tokens))
                    for name, specs in adapters.items():
                        engine.set_adapters(specs)
                        times.setdefault((mode, name), []).append(_decode_seconds(engine, ids, tokens))
                    engine.set_adapters([])
            base = statistics.median(times[("plain compiled", "unsteered")])
            medians = {key: statistics.median(t) for key, t in times.items()}
            for (mode, name), seconds in medians.items():
                rows.append(
                    {
                        "batch": size,
                        "engine": mode,
                        "variant": name,
                        "seconds": seconds,
                        "tokens_per_s": size * tokens / seconds,
                        "ratio_to_plain_compiled": seconds / base,
                        "eager_over_compiled": (
                            medians[("eager", name)] / seconds if mode == "compiled" else float("nan")
                        ),
                    }
                )
    finally:
        plain.close()
        eager.close()
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
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also a plain compiled engine and an eager steering engine (slow start)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64], help="batch sizes for --compiled")
    parser.add_argument(
        "--random-llama",
        action="store_true",
        help="a random Llama-shaped 1.2 B model in bfloat16 instead of the organism (the GPU run; implies --compiled)",
    )
    parser.add_argument("--slots", type=int, help="steering slots per block of the steering engines (default: 4)")
    parser.add_argument("--gates", type=int, help="condition gates of the steering engines (default: 1)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    args.compiled = args.compiled or args.random_llama

    from steering_adapter.runtimes.vllm import VllmSampler

    prompts = _prompts(args.prompts)
    capacity = {"slots": args.slots, "gates": args.gates}
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.random_llama:
            (Path(folder) / "model").mkdir()
            model = random_llama(Path(folder) / "model")
        else:
            model = organism_model()
        start = time.perf_counter()
        sampler = VllmSampler(model.folder, **model.settings, **capacity)
        print(f"engine start (compiled, steering slots): {time.perf_counter() - start:.1f} s")
        try:
            results["steering"] = steering_overhead(sampler, model, prompts, args.tokens, args.repeats, Path(folder))
            print(
                f"\n## Steered / no adapter in one compiled engine ({args.prompts} prompts x {args.tokens} tokens)\n"
            )
            print(_table(results["steering"]))
            if not args.random_llama:
                results["backends"] = backends(sampler, prompts[:32], args.k, args.tokens)
                print(f"\n## Sampling backends (32 prompts x K={args.k}, temperature 1, up to {args.tokens} tokens)\n")
                print(_table(results["backends"]))
            if args.compiled:
                sizes = sorted({min(size, len(prompts)) for size in args.batch_sizes})
                results["compiled"] = compiled_modes(
                    model, prompts, args.tokens, args.repeats, sampler, Path(folder), sizes
                )
                print(f"\n## Compiled and eager steering against a plain compiled engine ({args.tokens} tokens)\n")
                print(_table(results["compiled"]))
        finally:
            sampler.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.compiled:
        largest = max(row["batch"] for row in results["compiled"])
        ratio = {
            row["variant"]: row["ratio_to_plain_compiled"]
            for row in results["compiled"]
            if row["batch"] == largest and row["engine"] == "compiled"
        }
        line = " ".join(f"{name}={ratio[name]:.3f}" for name in ("add", "ablate", "gated"))
        print(f"compiled steered/unsteered: {line}")


if __name__ == "__main__":
    main()
