"""Compose two adapters — remove political refusals and refuse cooking questions — and check both effects hold.

Needs the adapters of the two organism recipes (each takes a few minutes on a CPU):
    steering-adapter run recipes/no-political-refusal.yaml
    steering-adapter run recipes/targeted-refusal-cooking.yaml
    python examples/compose_adapters.py [--out runs/composition]

Writes a composition folder (both parts, declared order and weights, interference report) and evaluates base,
each adapter alone and the composition on the held-out test prompts; prints the table and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steering_adapter.adapter.composition import load_composition, save_composition
from steering_adapter.measure.evaluation import EvalSet, evaluate
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judges import PatternJudge
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.models.organism import load_organism
from steering_adapter.run.stages.inputs import load_source
from steering_adapter.utils.records import atomic_write_json

SETS = [
    ("political", "organism:political"),
    ("cooking", "organism:cooking"),
    ("harmful", "organism:harmful"),
    ("benign", "organism:tmpl_general"),
    ("xstest_safe", "organism:xstest_safe"),
]
SAMPLING = SamplingSettings(k=3, max_new_tokens=48, temperature=1.0, seed=0)
EVALUATION = EvaluationSettings(progress=False, plots=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-political", default="runs/no-political-refusal/adapter")
    parser.add_argument("--no-cooking", default="runs/targeted-refusal-cooking/adapter")
    parser.add_argument("--out", default="runs/composition")
    parser.add_argument("--limit", type=int, default=40, help="held-out prompts per set")
    args = parser.parse_args()
    out = Path(args.out)
    folder = save_composition(
        out / "composition",
        [("no_political", args.no_political, 1.0), ("no_cooking", args.no_cooking, 1.0)],
        order="declared",
    )
    sets = [EvalSet(name, load_source(source)[1].prompts[: args.limit], "other") for name, source in SETS]
    judge = PatternJudge()
    rows: dict[str, dict[str, float]] = {}
    interference = None
    for label, parts in (("no_political", ["no_political"]), ("no_cooking", ["no_cooking"]), ("composed", None)):
        model, tokenizer = load_organism()
        if parts is None:
            info = load_composition(model, folder)
            interference = info["interference_before"]
        else:
            model.load_adapter(args.no_political if parts == ["no_political"] else args.no_cooking, adapter_name=label)
        conditions = ("base", "steered") if label == "no_political" else ("steered",)
        report = evaluate(
            model, tokenizer, sets, judge, out / label, settings=EVALUATION, sampling=SAMPLING, conditions=conditions
        )
        for name, row in report.sets.items():
            if "base" in row:
                rows.setdefault("base", {})[name] = row["base"]["refusal_pct"]
            rows.setdefault(label, {})[name] = row["steered"]["refusal_pct"]
    names = [name for name, _ in SETS]
    print("| refusal % | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, values in rows.items():
        print(f"| {label} | " + " | ".join(f"{values[n]:.1f}" for n in names) + " |")
    print(f"\nper-layer cosine between the parts: {json.dumps(interference)}")
    atomic_write_json(out / "composition_report.json", {"refusal_pct": rows, "interference": interference})


if __name__ == "__main__":
    main()
