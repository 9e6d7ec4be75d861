"""Wall time per pipeline stage of whole recipe runs, printed side by side in one table.

Run (CPU, no downloads; the organism recipe takes minutes, the SmolLM2 one tens of minutes on 2 cores)::

    python benchmarks/pipeline.py                                   # both shipped main-job recipes
    python benchmarks/pipeline.py --recipes recipes/no-political-refusal.yaml --threads 2

Each recipe runs from scratch into a fresh temporary folder (no resumed records) in its own subprocess, with the
given torch threads, through the same code path as ``steering-adapter run``; the stages come from the run's
``timings.json``. The table lists seconds per stage and per recipe and the total against its target (organism main
job ≤ 3 min, SmolLM2 recipe ≤ 25 min on 2 cores). ``--out`` keeps the runs and writes ``pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = ["recipes/no-political-refusal.yaml", "recipes/no-political-refusal-smollm2.yaml"]
TARGETS_SECONDS = {"no-political-refusal": 180.0, "no-political-refusal-smollm2": 1500.0}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the library's)")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    results = {}
    for recipe in args.recipes:
        name = Path(recipe).stem
        print(f"running {recipe} ...", flush=True)
        results[name] = run_one(recipe, base / name, args.threads)
    stages = list(dict.fromkeys(stage for r in results.values() for stage in r["stages"]))
    names = list(results)
    print()
    print("| stage | " + " | ".join(f"{n} (s)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{results[n]['stages'].get(stage, 0.0):.1f}" for n in names) + " |")
    print("| **total wall** | " + " | ".join(f"**{results[n]['wall']:.1f}**" for n in names) + " |")
    print("| torch threads | " + " | ".join(str(results[n]["threads"]) for n in names) + " |")
    done = ["yes" if results[n]["completed"] else "no (see pipeline.json)" for n in names]
    print("| completed | " + " | ".join(done) + " |")
    targets = [TARGETS_SECONDS.get(n) for n in names]
    print("| target | " + " | ".join(f"≤ {t:.0f}" if t else "–" for t in targets) + " |")
    print(
        "| wall / target | "
        + " | ".join(f"{results[n]['wall'] / t:.2f}" if t else "–" for n, t in zip(names, targets, strict=True))
        + " |"
    )
    (base / "pipeline.json").write_text(json.dumps(results, indent=2))
    print(f"\nruns and pipeline.json in {base}")


if __name__ == "__main__":
    main()
