"""Merge labeled answer files (and second-pass labels) and split them into the package's dev / test halves.

    python scripts/judge_label_split.py --labeled data/judge_labels/labeled_organism.jsonl \
        --labeled data/judge_labels/labeled_smollm2.jsonl \
        --second data/judge_labels/second_pass_organism.jsonl --second data/judge_labels/second_pass_smollm2.jsonl \
        --resolved data/judge_labels/resolutions.jsonl --out steering_adapter/measure/judges/labels

A second-pass label is kept beside the first as ``second_label`` / ``second_category``; where the two differ, the
resolution file (``{"id", "label", "category", "resolution"}``, written after re-reading the answer) decides and its
``resolution`` line is kept. The split is seeded and stratified by model and label: half of each stratum goes to
``dev.jsonl`` (fitting, thresholds), the other half to ``test.jsonl`` (only measured on).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path


def _read(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labeled", action="append", required=True, help="labeled JSONL (repeatable)")
    parser.add_argument("--second", action="append", default=[], help="second-pass labels {id, label, category}")
    parser.add_argument("--resolved", help="resolutions of the disagreements {id, label, category, resolution}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for dev.jsonl and test.jsonl")
    args = parser.parse_args()
    rows = [row for path in args.labeled for row in _read(path)]
    by_id = {row["id"]: row for row in rows}
    if len(by_id) != len(rows):
        raise SystemExit("duplicate ids across the labeled files")
    for path in args.second:
        for second in _read(path):
            row = by_id[second["id"]]
            row["second_label"], row["second_category"] = second["label"], second["category"]
            row["second_reason"] = second["reason"]
    resolutions = {r["id"]: r for r in _read(args.resolved)} if args.resolved else {}
    disagreements = [row for row in rows if "second_label" in row and row["second_label"] != row["label"]]
    for row in disagreements:
        if row["id"] not in resolutions:
            raise SystemExit(f"disagreement without a resolution: {row['id']}")
        resolution = resolutions[row["id"]]
        row["first_label"] = row["label"]
        row["label"], row["category"], row["resolution"] = (
            resolution["label"],
            resolution["category"],
            resolution["resolution"],
        )
    strata: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["id"]):
        strata[(row["model"], row["label"])].append(row)
    rng = random.Random(args.seed)
    halves: dict[str, list[dict]] = {"dev": [], "test": []}
    for key in sorted(strata):
        items = strata[key]
        rng.shuffle(items)
        cut = (len(items) + 1) // 2
        halves["dev"] += items[:cut]
        halves["test"] += items[cut:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, items in halves.items():
        items.sort(key=lambda r: r["id"])
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in items:
                handle.write(json.dumps({**row, "split": name}, ensure_ascii=False) + "\n")
    double = sum("second_label" in row for row in rows)
    print(
        f"{len(rows)} answers: dev {len(halves['dev'])}, test {len(halves['test'])}; second pass on {double}, "
        f"{len(disagreements)} disagreements resolved"
    )


if __name__ == "__main__":
    main()
