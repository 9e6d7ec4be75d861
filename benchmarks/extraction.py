"""Benchmark of the extraction stage: collection throughput, streaming memory, ridge solve time.

Run (CPU, no downloads; about a minute on 2 cores with the defaults)::

    python benchmarks/extraction.py
    python benchmarks/extraction.py --hidden 256 --blocks 4 --prompts 64 --ridge-dims 2048 4096

Prints, in one run:

(a) collection throughput (``ActivationCollector`` with streaming statistics on every block, tokenisation
    included) vs a bare batched forward of the same model on the same prompts (pre-tokenised, full logits),
    both in the given order and length-sorted like the collector; target ratio ≥ 0.9;
(b) peak memory over the model's own footprint for N and 10·N prompts (the same N prompts repeated, so that
    only the count changes) with streaming statistics, each in a fresh subprocess: peak RSS via
    ``/proc/self/status`` VmHWM after a reset, with glibc told to return freed memory so that RSS follows live
    memory; target: flat;
(c) time to solve ``(Σ + λI) v = Δμ`` (Cholesky, float64) for large ``d`` with a random rank-deficient SPD Σ.

The model is a random-weight Llama-shaped network built from a config, with the tiny test tokenizer
(``tests/helpers/tiny.py``). Its vocabulary is tiny, so the bare forward's lm_head costs almost nothing; with a real
128k-token vocabulary, skipping the logits (as the collector does) saves considerably more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tiny import tiny_tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from steering_adapter.directions.collection import ActivationCollector  # noqa: E402
from steering_adapter.directions.linear_algebra import ridge_solve  # noqa: E402
from steering_adapter.measure.sampling.prompt_encoding import format_prompts  # noqa: E402

WORDS = (
    "the a history of political protest government bread recipe poem sea wind explain describe why how what "
    "capital region leader banned book censored events year vaccine immune system river mountain city "
    "election policy economy science music art language travel weather garden"
).split()


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 40, size=n)
    return [" ".join(rng.choice(WORDS, size=k)).capitalize() + "?" for k in lengths]


def build_model(hidden: int, blocks: int, vocab: int) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875),
        num_hidden_layers=blocks,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# --------------------------------------------------------------------------------------------- (a) throughput


def bare_forward_seconds(model, tokenizer, prompts: list[str], batch_size: int, sort: bool = False) -> float:
    texts = format_prompts(tokenizer, prompts)
    if sort:  # the same length-grouping the collector does: the fastest a plain forward can be
        texts.sort(key=lambda text: -len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    batches = [
        tokenizer(texts[i : i + batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
        for i in range(0, len(texts), batch_size)
    ]
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            model(**batch, use_cache=False)
    return time.perf_counter() - start


def collector_seconds(collector: ActivationCollector, prompts: list[str], labels: np.ndarray) -> float:
    start = time.perf_counter()
    collector.collect(prompts, labels=labels)
    return time.perf_counter() - start


def throughput(args: argparse.Namespace) -> dict[str, float]:
    tokenizer = tiny_tokenizer()
    model = build_model(args.hidden, args.blocks, len(tokenizer))
    prompts = make_prompts(args.prompts)
    labels = np.arange(len(prompts)) % 2 == 0
    collector = ActivationCollector(model, tokenizer, batch_size=args.batch_size, progress=False)
    bare_forward_seconds(model, tokenizer, prompts[: args.batch_size], args.batch_size)  # warm-up
    collector_seconds(collector, prompts[: args.batch_size], labels[: args.batch_size])
    bare, bare_sorted, collect = [], [], []
    for _ in range(args.repeats):  # interleaved, best of each: robust to a noisy shared machine
        bare.append(bare_forward_seconds(model, tokenizer, prompts, args.batch_size))
        bare_sorted.append(bare_forward_seconds(model, tokenizer, prompts, args.batch_size, sort=True))
        collect.append(collector_seconds(collector, prompts, labels))
    return {
        "bare_prompts_per_s": len(prompts) / min(bare),
        "bare_sorted_prompts_per_s": len(prompts) / min(bare_sorted),
        "collector_prompts_per_s": len(prompts) / min(collect),
        "ratio": min(bare) / min(collect),
        "ratio_sorted": min(bare_sorted) / min(collect),
    }


# ------------------------------------------------------------------------------------------------- (b) memory


def memory_child(args: argparse.Namespace) -> None:
    """Runs in a subprocess: peak memory of one streaming collection of ``args.memory_child`` prompts."""
    torch.set_num_threads(args.threads)
    tokenizer = tiny_tokenizer()
    model = build_model(args.hidden, args.blocks, len(tokenizer))
    base = make_prompts(args.memory_prompts, seed=1)
    # 10·N = the same N prompts 10 times: the same lengths and batch shapes, so only the count changes
    prompts = base * (args.memory_child // len(base))
    labels = np.arange(len(prompts)) % 2 == 0
    collector = ActivationCollector(model, tokenizer, batch_size=args.batch_size, progress=False)
    collector.collect(base, labels=labels[: len(base)])  # warm-up: library caches, thread pools
    baseline = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    result = collector.collect(prompts, labels=labels)
    peak = rss_kib("VmHWM")
    stats_bytes = result.stats.nbytes
    print(
        json.dumps(
            {
                "prompts": len(prompts),
                "rss_peak_over_model_mib": (peak - baseline) / 1024,
                "statistics_mib": stats_bytes / 2**20,
            }
        )
    )


def memory(args: argparse.Namespace) -> list[dict[str, float]]:
    rows = []
    for n in (args.memory_prompts, 10 * args.memory_prompts):
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            str(n),
            "--memory-prompts",
            str(args.memory_prompts),
            "--hidden",
            str(args.hidden),
            "--blocks",
            str(args.blocks),
            "--batch-size",
            str(args.batch_size),
            "--threads",
            str(args.threads),
        ]
        # Fixed glibc thresholds: freed tensors go back to the OS, so RSS follows live memory instead of the
        # allocator's caching (otherwise the peak RSS is mostly fragmentation noise).
        env = dict(
            os.environ,
            TRANSFORMERS_VERBOSITY="error",
            MALLOC_MMAP_THRESHOLD_="65536",
            MALLOC_TRIM_THRESHOLD_="131072",
        )
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    return rows


# -------------------------------------------------------------------------------------------------- (c) ridge


def ridge(args: argparse.Namespace) -> list[dict[str, float]]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for d in args.ridge_dims:
        factor = torch.randn(d, args.ridge_rank, dtype=torch.float64, generator=generator)
        covariance = factor @ factor.T / args.ridge_rank  # SPD, rank-deficient like a real N ≪ d covariance
        rhs = torch.randn(d, dtype=torch.float64, generator=generator)
        lam = 0.1 * float(covariance.diagonal().mean())
        start = time.perf_counter()
        solution = ridge_solve(covariance, lam, rhs)
        seconds = time.perf_counter() - start
        residual = covariance @ solution + lam * solution - rhs
        rows.append({"d": d, "seconds": seconds, "relative_residual": float(residual.norm() / rhs.norm())})
        del factor, covariance
    return rows


# ------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512, help="model width d (default 512)")
    parser.add_argument("--blocks", type=int, default=8, help="decoder blocks (default 8)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts for the throughput test (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept (default 3)")
    parser.add_argument("--memory-prompts", type=int, default=16, help="N for the N vs 10·N memory test")
    parser.add_argument("--ridge-dims", type=int, nargs="+", default=[2048, 4096, 8192], help="d values")
    parser.add_argument("--ridge-rank", type=int, default=256, help="rank of the random covariance")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "memory", "ridge"])
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    print(
        f"model: random Llama-shaped, hidden {args.hidden}, {args.blocks} blocks, tiny tokenizer; "
        f"batch {args.batch_size}; torch {torch.__version__}, {args.threads} CPU threads; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    started = time.perf_counter()
    if "throughput" not in args.skip:
        result = throughput(args)
        print(f"\n(a) collection throughput, {args.prompts} prompts, all {args.blocks} blocks, position 'last'")
        print(f"    bare batched forward, given order:     {result['bare_prompts_per_s']:8.1f} prompts/s")
        print(f"    bare batched forward, length-sorted:   {result['bare_sorted_prompts_per_s']:8.1f} prompts/s")
        print(f"    collector + streaming statistics:      {result['collector_prompts_per_s']:8.1f} prompts/s")
        print(f"    ratio collector / bare (given order):  {result['ratio']:8.2f}   (target >= 0.9)")
        print(f"    ratio collector / bare (sorted):       {result['ratio_sorted']:8.2f}")
    if "memory" not in args.skip:
        rows = memory(args)
        print("\n(b) peak memory of a streaming collection (fresh process each; over the loaded model)")
        print("    prompts   peak RSS over model, MiB   of which statistics, MiB")
        for row in rows:
            peak, stats = row["rss_peak_over_model_mib"], row["statistics_mib"]
            print(f"    {row['prompts']:7d}   {peak:24.1f}   {stats:24.1f}")
        growth = rows[1]["rss_peak_over_model_mib"] - rows[0]["rss_peak_over_model_mib"]
        print(f"    growth from N to 10·N: {growth:+.1f} MiB   (target: flat)")
    if "ridge" not in args.skip:
        print(f"\n(c) ridge solve (Σ + λI) v = Δμ, float64 Cholesky, Σ of rank {args.ridge_rank}")
        for row in ridge(args):
            residual = row["relative_residual"]
            print(f"    d = {row['d']:5d}: {row['seconds']:7.2f} s   relative residual {residual:.1e}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
