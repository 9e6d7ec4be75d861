"""Print the before/after results table of one or more pipeline runs, from each run folder's ``summary.json``.

The tables of ``README.md`` ("Measured on the organism") and ``docs/results.md`` are this script's output, so they
are never typed by hand::

    python scripts/results_tables.py runs/no-political-refusal
    python scripts/results_tables.py runs/no-political-refusal runs/no-political-refusal-smollm2

For each run it prints one Markdown table (set, role, n, refusal % before, after, the same vector without its gate
when the chosen adapter is gated, relevance before → after) and the KL line. With several runs, each table is
preceded by a line naming the recipe and its choice (blocks, α, gated or not). ``summary.json`` is written by
``steering_adapter/run/stages/publish.py``; the set descriptions come from the run's ``recipe.json`` (the evaluation
sets' sources) when it is there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

# Descriptions of the prompt sources the shipped recipes evaluate on (``prompts.evaluation[].source``).
SOURCE_DESCRIPTIONS = {
    "jbb_harmful": "JailbreakBench",
    "jbb_benign": "JailbreakBench benign",
    "xstest_safe": "XSTest safe",
    "xstest_unsafe": "XSTest unsafe",
    "tmpl_general": "general questions",
    "ccp_sensitive": "CCP-sensitive",
}
ORGANISM_PREFIX = "organism:"
BOLD_ROLES = ("target", "harmful")  # the rows whose steered rate is the point of the table


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:.3g}".replace("-", "−")


def describe_source(source: str | None) -> str | None:
    """A short human description of an evaluation set's source, or ``None`` when it has none.

    Args:
        source: a recipe source (``"organism:political"``, ``"jbb_harmful"``, a file path, ...), or ``None``.

    Returns:
        ``"organism held-out"`` for the organism's own categories, the set's name for the shared sets and the
        organism's copies of them, ``None`` otherwise.
    """
    if not source:
        return None
    name = source.removeprefix(ORGANISM_PREFIX)
    if name in SOURCE_DESCRIPTIONS:
        return SOURCE_DESCRIPTIONS[name]
    return "organism held-out" if source.startswith(ORGANISM_PREFIX) else None


def recipe_sources(recipe: dict[str, Any] | None) -> dict[str, str]:
    """``{set name: source}`` of a run's ``recipe.json`` (empty without one)."""
    if not recipe:
        return {}
    evaluation = recipe.get("prompts", {}).get("evaluation") or []
    return {entry["name"]: entry.get("source") for entry in evaluation if isinstance(entry, dict) and "name" in entry}


def results_table(summary: dict[str, Any], sources: dict[str, str] | None = None) -> str:
    """The Markdown results table and KL line of one run.

    Args:
        summary: a run's ``summary.json`` (``report`` and ``ungated_report`` as ``EvaluationReport.to_dict()``).
        sources: ``{set name: recipe source}`` for the descriptions (see :func:`describe_source`).

    Returns:
        The table, a blank line and the KL sentence (when the report has KL), ending with a newline.
    """
    sources = sources or {}
    report = summary["report"]
    ungated = summary.get("ungated_report")
    gated = bool(summary.get("gated")) and ungated is not None
    header = ["set", "role", "n", "refusal % before", "after (gated)" if gated else "after"]
    if gated:
        header.append("same vector ungated")
    header.append("relevance before → after")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in report["sets"].items():
        description = describe_source(sources.get(name))
        label = f"`{name}`" + (f" ({description})" if description else "")
        after = _number(row["steered"]["refusal_pct"], 1)
        if row["role"] in BOLD_ROLES and after != "n/a":
            after = f"**{after}**"
        cells = [label, row["role"], str(row["base"]["n"]), _number(row["base"]["refusal_pct"], 1), after]
        if gated:
            cells.append(_number(ungated["sets"][name]["steered"]["refusal_pct"], 1))
        relevance = [_number(row[c].get("mean_relevance"), 3) for c in ("base", "steered")]
        cells.append(f"{relevance[0]} → {relevance[1]}")
        lines.append("| " + " | ".join(cells) + " |")
    kl = report.get("kl")
    if kl:
        sentence = (
            f"KL(base ‖ steered) on {kl['n_prompts']} neutral prompts: {kl['mean_kl']:.3f} per token"
            + (" gated" if gated else "")
            + f" ({kl['mean_kl_last']:.3f} at the first answer token)"
        )
        if gated and ungated.get("kl"):
            sentence += f", {ungated['kl']['mean_kl']:.3f} ungated"
        lines += ["", sentence + "."]
    return "\n".join(lines) + "\n"


def choice_line(summary: dict[str, Any]) -> str:
    """``**`recipe`**: blocks 3, 4, 5, α = −2.76, gated`` for one run."""
    layers = ", ".join(str(layer) for layer in summary["layers"])
    gate = "gated" if summary.get("gated") else "ungated"
    return f"**`{summary['recipe']}`**: blocks {layers}, α = {_signed(summary['alpha'])}, {gate}"


def run_table(run_dir: str | Path, with_choice: bool = False) -> str:
    """The results table of the run folder ``run_dir`` (its ``summary.json`` and, when present, ``recipe.json``)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: no summary.json (has `steering-adapter run` finished there?)")
    summary = json.loads(summary_path.read_text())
    recipe_path = run_dir / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else None
    table = results_table(summary, recipe_sources(recipe))
    return (choice_line(summary) + "\n\n" + table) if with_choice else table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (each holding the summary.json of a finished run)")
    args = parser.parse_args(argv)
    try:
        tables = [run_table(run, with_choice=len(args.runs) > 1) for run in args.runs]
    except (FileNotFoundError, json.JSONDecodeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
