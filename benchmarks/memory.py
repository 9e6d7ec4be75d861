"""Peak memory of collecting RMD statistics on d = 4096 and d = 8192 Llama-shaped models, against the formula.

Run (CPU, no downloads; about 2 minutes and 2 GB of RAM on 2 cores with the defaults)::

    python benchmarks/memory.py
    python benchmarks/memory.py --hidden 4096 --prompts 8 --blocks 2

For each width and for N and 10·N prompts, a fresh subprocess builds a random-weight Llama-shaped model (``--blocks``
decoder blocks of width ``d``, 8 attention heads of 128 and 8 key/value heads, a small MLP and the tiny test
vocabulary, so the weights stay small), warms up, and collects the statistics RMD reads (compliance second moments,
every block a candidate) from the prompts. It reports

- the model's own footprint: the peak host memory of a bare pass over the same prompts (the collector's forward
  passes and hooks, no statistics): ``VmHWM`` after a reset (``/proc/self/clear_refs``) minus ``VmRSS`` before, with
  glibc told to hand freed memory back (``MALLOC_MMAP_THRESHOLD_``) so that RSS follows live memory;
- the peak of the collection measured the same way, and its excess over the model's own footprint;
- with CUDA (``--device cuda``), the same two peaks of ``torch.cuda.max_memory_allocated``;
- the formula ``8 · L · (2·d + d²)`` plus one float32 scratch block ``4 · d · ⌈d/8⌉``
  (:func:`steering_adapter.directions.moments.statistics_nbytes`,
  :func:`~steering_adapter.directions.moments.scratch_nbytes`),

side by side; targets: the collection's peak over the model's own ≤ 1.2 × formula, and the same for N and 10·N
prompts (the same N prompts repeated, so only the count changes; keep N ≥ the batch size so that the batches have the
same shapes).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from extraction import make_prompts, rss_kib  # noqa: E402  (benchmarks/extraction.py)
from tiny import tiny_tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from steering_adapter.directions.collection import ActivationCollector  # noqa: E402
from steering_adapter.directions.estimators import RidgeMeanDifference  # noqa: E402
from steering_adapter.directions.moments import scratch_nbytes, statistics_nbytes  # noqa: E402


def build_model(hidden: int, blocks: int, vocab: int, device: str) -> torch.nn.Module:
    """A Llama-shaped model of width ``hidden`` whose weights stay small (8 heads of 128, MLP of 1024)."""
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=1024,
        num_hidden_layers=blocks,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device).eval()


def child(args: argparse.Namespace) -> None:
    """In a fresh process: peak memory of one collection of ``args.child_prompts`` prompts."""
    torch.set_num_threads(args.threads)
    tokenizer = tiny_tokenizer()
    model = build_model(args.child_hidden, args.blocks, len(tokenizer), args.device)
    base = make_prompts(args.prompts, seed=1)
    prompts = base * (args.child_prompts // len(base))
    labels = np.arange(len(prompts)) % 2 == 0
    needed = RidgeMeanDifference().required_statistics()
    collector = ActivationCollector(
        model, tokenizer, batch_size=args.batch_size, second_moments=needed.second_moments, progress=False
    )
    warm = base[: args.batch_size]
    collector.collect(warm, labels=labels[: len(warm)])  # warm-up: caches, thread pools
    cuda = args.device.startswith("cuda")

    def peaks(work) -> tuple[int, int | None, float]:
        """Peak host and device bytes of ``work()`` over what is live before it, and its seconds."""
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            device_base = torch.cuda.memory_allocated()
        host_base = rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        host = (rss_kib("VmHWM") - host_base) * 1024
        if not cuda:
            return host, None, seconds
        torch.cuda.synchronize()
        return host, torch.cuda.max_memory_allocated() - device_base, seconds

    forward_host, forward_device, _ = peaks(lambda: [None for _ in collector.iter_activations(prompts)])
    results = []
    host, device, seconds = peaks(lambda: results.append(collector.collect(prompts, labels=labels)))
    row = {
        "hidden": args.child_hidden,
        "prompts": len(prompts),
        "forward_host": forward_host,
        "host_peak": host,
        "formula": statistics_nbytes(len(collector.layers), args.child_hidden, needed.second_moments)
        + scratch_nbytes(args.child_hidden, needed.second_moments),
        "nbytes": results[0].stats.nbytes,
        "seconds": seconds,
    }
    if cuda:
        row.update(forward_device=forward_device, device_peak=device)
    print(json.dumps(row))


def measure(args: argparse.Namespace, hidden: int, prompts: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child-hidden",
        str(hidden),
        "--child-prompts",
        str(prompts),
        "--prompts",
        str(args.prompts),
        "--blocks",
        str(args.blocks),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    env = dict(
        os.environ, TRANSFORMERS_VERBOSITY="error", MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072"
    )
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[4096, 8192], help="widths d (default 4096 8192)")
    parser.add_argument("--blocks", type=int, default=2, help="decoder blocks, all candidates (default 2)")
    parser.add_argument("--prompts", type=int, default=8, help="N of the N vs 10·N comparison (default 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--child-hidden", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-prompts", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_hidden is not None:
        child(args)
        return
    print(
        f"RMD statistics (compliance second moments) on {args.blocks} blocks, batch {args.batch_size}, "
        f"{args.device}, torch {torch.__version__}, {args.threads} threads; fresh process per row\n"
    )
    device = args.device.startswith("cuda")
    head = "|    d | prompts | formula MiB | model's own MiB | collection MiB | excess / formula |"
    head += " device: model's own | collection | excess / formula |" if device else ""
    print(head + " seconds |")
    print("|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if device else "") + "---:|")
    verdicts = []
    for hidden in args.hidden:
        rows = [measure(args, hidden, n) for n in (args.prompts, 10 * args.prompts)]
        for row in rows:
            assert row["nbytes"] == statistics_nbytes(args.blocks, hidden, "compliance")
            row["host_excess"] = row["host_peak"] - row["forward_host"]
            line = (
                f"| {hidden:4d} | {row['prompts']:7d} | {row['formula'] / 2**20:11.1f} | "
                f"{row['forward_host'] / 2**20:15.1f} | {row['host_peak'] / 2**20:14.1f} | "
                f"{row['host_excess'] / row['formula']:16.3f} |"
            )
            if device:
                row["device_excess"] = row["device_peak"] - row["forward_device"]
                line += (
                    f" {row['forward_device'] / 2**20:20.1f} | {row['device_peak'] / 2**20:10.1f} | "
                    f"{row['device_excess'] / row['formula']:16.3f} |"
                )
            print(line + f" {row['seconds']:7.1f} |", flush=True)
        for place in ("host", "device") if device else ("host",):
            ratio = max(row[f"{place}_excess"] / row["formula"] for row in rows)
            growth = (rows[1][f"{place}_excess"] - rows[0][f"{place}_excess"]) / rows[0]["formula"]
            verdicts.append(
                f"d = {hidden}, {place}: collection peak over the model's own ≤ {ratio:.3f} × formula (target ≤ 1.2); "
                f"N → 10·N growth {growth:+.1%} of the formula (target: flat)"
            )
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
