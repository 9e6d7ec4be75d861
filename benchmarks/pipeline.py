"""Wall time per pipeline stage of whole recipe runs against the machine's limit, side by side in one table.

Run (CPU, no downloads; the organism recipe takes a minute or two, the SmolLM2 one about 25 minutes on 2 cores)::

    python benchmarks/pipeline.py                                   # both shipped main-job recipes
    python benchmarks/pipeline.py --recipes recipes/no-political-refusal.yaml --threads 2

Each recipe runs from scratch into a fresh temporary folder (no resumed records) in its own subprocess, with the
given torch threads, through the same code path as ``steering-adapter run``; the stages and the tokens each stage put
through the recipe's model come from the run's ``timings.json`` (``tokens``: ``forward`` positions of multi-token
passes, ``decode`` positions of one-token decoding steps, ``padding`` positions holding the padding id; passes of the
judge's own reader and of the relevance embedder are not counted).

The machine's limit is measured in the same run, in this process, with the same threads, on the recipe's model,
before and after the recipe runs (the higher of the two is used: a measurement disturbed by other work reads low):
bare batched forward throughput (``[rows, 64]`` tokens, rows = the recipe's ``batch_size`` × ``k``, logits of the
last position only, as in a prefill) in tokens/s, and bare decoding throughput (one-token steps of the same rows
against a 64-token KV cache) in rows/s. Per stage it prints:

- ``bound``: ``(forward + decode) ÷ forward throughput``, the issue's compute bound (every token at prefill speed);
- ``wall / bound``: how far the stage is from it (target ≤ 2);
- ``wall / decode-aware``: against ``forward ÷ forward throughput + decode ÷ decoding throughput`` (what a batch of
  the recipe's size can reach when it decodes one token per step, as ``generate`` does);
- ``padding %``: the share of the stage's positions that hold the padding id (left padding and rows decoded past
  their end; for tokenizers whose padding id is also their end-of-turn token, as SmolLM2's, those tokens count too).

Targets (2 threads, from scratch): organism main job ≤ 45 s, SmolLM2 removal recipe ≤ 6 min. ``--out`` keeps the
runs and writes ``pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from steering_adapter.run.recipe import load_recipe
from steering_adapter.run.stages import load_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = ["recipes/no-political-refusal.yaml", "recipes/no-political-refusal-smollm2.yaml"]
TARGETS_SECONDS = {"no-political-refusal": 45.0, "no-political-refusal-smollm2": 360.0}
CONTEXT = 64


def throughput(recipe_path: str, repeats: int = 3) -> dict:
    """Bare batched forward (tokens/s) and decoding (rows/s) throughput of the recipe's model on this machine."""
    recipe = load_recipe(ROOT / recipe_path)
    model, _ = load_model(recipe.model)
    model.eval()
    sampling = recipe.sampling
    rows = sampling.batch_size * (1 if sampling.temperature == 0 else sampling.k)
    ids = torch.randint(100, min(model.config.vocab_size, 5000), (rows, CONTEXT))
    with torch.no_grad():
        model(input_ids=ids, logits_to_keep=1)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids, logits_to_keep=1)
        forward = rows * CONTEXT * repeats / (time.perf_counter() - start)
        cache = DynamicCache(config=model.config)
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        step = ids[:, -1:]
        steps = 8
        start = time.perf_counter()
        for _ in range(steps):
            model(input_ids=step, past_key_values=cache, use_cache=True)
        decode = rows * steps / (time.perf_counter() - start)
    return {"rows": rows, "forward_tokens_per_s": forward, "decode_rows_per_s": decode}


def run_one(recipe: str, out: Path, threads: int | None) -> dict:
    """Run ``recipe`` into ``out`` in a subprocess; returns its timings and wall time."""
    command = [sys.executable, "-m", "steering_adapter.cli", "run", recipe, "--out", str(out), "--no-progress"]
    if threads is not None:
        command += ["--threads", str(threads)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if not (out / "timings.json").is_file():
        raise SystemExit(f"{recipe} failed (exit {done.returncode}) before timing anything:\n{done.stderr[-3000:]}")
    timings = json.loads((out / "timings.json").read_text())  # written by failed runs too (completed: false)
    result = {
        "wall": wall,
        "stages": timings["stages"],
        "tokens": timings.get("tokens", {}),
        "threads": timings.get("torch_threads"),
        "exit": done.returncode,
        "completed": timings["completed"],
    }
    if timings["completed"]:
        summary = json.loads((out / "summary.json").read_text())
        result.update(alpha=summary["alpha"], layers=summary["layers"])
    else:
        result["error"] = timings.get("error")
        print(f"  {recipe} stopped (exit {done.returncode}): {timings.get('error')}", flush=True)
    return result


def print_stages(name: str, result: dict, limit: dict) -> None:
    """One recipe's table: seconds, tokens, bounds and ratios per stage."""
    print(f"\n### {name}: {result['threads']} torch threads, {limit['rows']} rows per batch")
    print(
        f"bare forward {limit['forward_tokens_per_s']:.0f} tokens/s, bare decoding {limit['decode_rows_per_s']:.0f}"
        " rows/s (measured in this run, the higher of before and after it)\n"
    )
    print("| stage | wall (s) | forward | decode | padding % | bound (s) | wall / bound | wall / decode-aware |")
    print("|---|---|---|---|---|---|---|---|")
    total_bound = total_aware = 0.0
    for stage, seconds in result["stages"].items():
        counts = result["tokens"].get(stage, {})
        forward, decode, padding = (counts.get(kind, 0) for kind in ("forward", "decode", "padding"))
        bound = (forward + decode) / limit["forward_tokens_per_s"]
        aware = forward / limit["forward_tokens_per_s"] + decode / limit["decode_rows_per_s"]
        total_bound, total_aware = total_bound + bound, total_aware + aware
        share = f"{100 * padding / (forward + decode):.0f}" if forward + decode else "–"
        ratio = f"{seconds / bound:.1f}" if bound > 0.5 else "–"
        ratio_aware = f"{seconds / aware:.1f}" if aware > 0.5 else "–"
        print(f"| {stage} | {seconds:.1f} | {forward} | {decode} | {share} | {bound:.1f} | {ratio} | {ratio_aware} |")
    wall = result["wall"]
    print(
        f"| **total wall** | **{wall:.1f}** | | | | {total_bound:.1f} | {wall / total_bound:.1f} |"
        f" {wall / total_aware:.1f} |"
    )
    target = TARGETS_SECONDS.get(name)
    if target:
        print(f"\ntarget ≤ {target:.0f} s: wall / target = {wall / target:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the library's)")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    base = args.out or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    results, limits = {}, {}
    for recipe in args.recipes:
        name = Path(recipe).stem
        print(f"measuring the bare throughput of {recipe}'s model ...", flush=True)
        before = throughput(recipe)
        print(f"running {recipe} ...", flush=True)
        results[name] = run_one(recipe, base / name, args.threads)
        after = throughput(recipe)  # again once the run is done: a measurement disturbed by other work reads low
        limits[name] = {key: max(before[key], after[key]) for key in before}
        results[name]["limit"] = {"before": before, "after": after, "used": limits[name]}
    for name, result in results.items():
        print_stages(name, result, limits[name])
        if not result["completed"]:
            print("(stopped: see pipeline.json)")
    (base / "pipeline.json").write_text(json.dumps(results, indent=2))
    print(f"\nruns and pipeline.json in {base}")


if __name__ == "__main__":
    main()
