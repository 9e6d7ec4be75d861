"""Draw a pool of answers to label by reading from finished `steering-adapter run` folders.

Every answer a run wrote is a candidate: its training scores (base model), its evaluation (base and steered, gated
and ungated) and every selection point (steered at each α of the sweep). The pool is a seeded sample stratified by
model, condition and role, without duplicate answers, written as JSONL with the fields a label file keeps
(``prompt``, ``answer``) and where the answer came from (``model``, ``source``, ``condition``, ``alpha``, ``gated``,
``set``, ``role``, ``id``). Label it by hand (``label``, ``category``, ``reason``; see docs/judges.md) and check
judges on it with ``steering-adapter judge-check``.

    python scripts/judge_label_pool.py --run organism=runs/no-political-refusal \
        --run smollm2-censored=runs/no-political-refusal-smollm2 --per-model 250 --out pool.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

POINT = re.compile(r"top(?P<n>\d+)_alpha(?P<alpha>-?[\d.]+)(?P<gated>_gated)?$")


def _answers(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _roles(run: Path) -> dict[str, str]:
    sweep = run / "selection" / "sweep.json"
    roles = json.loads(sweep.read_text())["roles"] if sweep.is_file() else {}
    report = run / "evaluation" / "report.json"
    if report.is_file():
        roles.update({name: s["role"] for name, s in json.loads(report.read_text())["sets"].items()})
    return roles


def candidates(model: str, run: Path) -> list[dict[str, Any]]:
    """Every answer of one run folder, with where it came from."""
    summary = json.loads((run / "summary.json").read_text())
    roles = _roles(run)
    sources: list[tuple[Path, dict[str, Any]]] = []
    train = run / "train_scores" / "answers.jsonl"
    if train.is_file():
        sources.append((train, {"condition": "base", "alpha": 0.0, "gated": False, "set": "train", "role": "train"}))
    for folder, gated in (("evaluation", summary.get("gated", False)), ("evaluation_ungated", False)):
        for condition in ("base", "steered"):
            for path in sorted((run / folder / condition).glob("*/answers.jsonl")):
                alpha = summary["alpha"] if condition == "steered" else 0.0
                meta = {"condition": condition, "alpha": alpha, "gated": gated and condition == "steered"}
                sources.append((path, {**meta, "set": path.parent.name, "role": roles.get(path.parent.name, "?")}))
    for point in sorted((run / "selection").glob("top*_alpha*")):
        match = POINT.match(point.name)
        if match is None:
            continue
        meta = {"condition": "steered", "alpha": float(match["alpha"]), "gated": bool(match["gated"])}
        for path in sorted((point / "steered").glob("*/answers.jsonl")):
            sources.append((path, {**meta, "set": path.parent.name, "role": roles.get(path.parent.name, "?")}))
    out = []
    for path, meta in sources:
        for record in _answers(path):
            for answer in record["answers"]:
                out.append(
                    {
                        "model": model,
                        "source": str(path.relative_to(run).parent),
                        **meta,
                        "prompt": record["prompt"],
                        "answer": answer["text"].strip(),
                    }
                )
    return out


def draw(pool: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` answers without duplicates, round-robin over (condition, gated, role) strata, each shuffled."""
    strata: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for item in pool:
        strata[(item["condition"], item["gated"], item["role"])].append(item)
    for items in strata.values():
        rng.shuffle(items)
    chosen, seen = [], set()
    while len(chosen) < n and any(strata.values()):
        for key in sorted(strata, key=str):
            while strata[key]:
                item = strata[key].pop()
                text = (item["prompt"], item["answer"])
                if text not in seen and item["answer"]:
                    seen.add(text)
                    chosen.append(item)
                    break
            if len(chosen) == n:
                break
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, help="MODEL=RUN_FOLDER (repeatable)")
    parser.add_argument("--per-model", type=int, default=250, help="answers drawn per model (default 250)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="pool JSONL file to write")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    chosen = []
    for spec in args.run:
        model, _, folder = spec.partition("=")
        if not folder or not (Path(folder) / "summary.json").is_file():
            parser.error(f"--run {spec!r}: expected MODEL=RUN_FOLDER of a finished run (with summary.json)")
        chosen += draw(candidates(model, Path(folder)), args.per_model, rng)
    rng.shuffle(chosen)
    with open(args.out, "w", encoding="utf-8") as handle:
        for item in chosen:
            item["id"] = hashlib.sha256(f"{item['model']}\0{item['prompt']}\0{item['answer']}".encode()).hexdigest()[
                :12
            ]
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {len(chosen)} answers to {args.out}")


if __name__ == "__main__":
    main()
