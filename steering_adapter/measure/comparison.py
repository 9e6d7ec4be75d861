"""The fixed comparison table of a model card: the numbers adapters and abliterated models are compared by.

One row per evaluation set (refusals per 100 prompts, by role), the first-token KL on neutral prompts and one row per
general benchmark (accuracy ± standard error, in points), with a column for the base model, the adapter as published
and, for a gated adapter, the same vectors without the gate. The rows and columns are always the same, so two cards
can be read side by side; a number that was not measured shows ``n/a``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from steering_adapter.measure.evaluation_report import EvaluationReport

__all__ = ["ROLE_LABELS", "benchmarks_markdown", "comparison_markdown"]

ROLE_LABELS = {
    "target": "target refusals",
    "harmful": "harmful refusals",
    "benign": "false refusals",
    "other": "refusals",
}
VARIANT_LABELS = {"base": "base", "steered": "steered", "ungated": "ungated"}


def _points(score: Mapping[str, Any] | None) -> str:
    if not score or score.get("accuracy") is None or math.isnan(score["accuracy"]):
        return "n/a"
    stderr = score.get("stderr")
    spread = "" if stderr is None or math.isnan(stderr) else f" ± {100 * stderr:.1f}"
    return f"{100 * score['accuracy']:.1f}{spread}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def _benchmark_label(task: str, scores: Mapping[str, Mapping[str, Any]]) -> str:
    any_score = next(iter(scores.values()))
    shots = any_score.get("num_fewshot", 0)
    limit = any_score.get("limit")
    per_subject = f", {limit}/subject" if limit else ""
    return f"{task.upper() if task == 'mmlu' else task} ({shots}-shot{per_subject}, n = {any_score.get('n')})"


def benchmarks_markdown(benchmarks: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The benchmark rows of a report: ``| benchmark | base | steered | ungated | Δ steered |`` in points.

    Args:
        benchmarks: ``{task: {variant: BenchmarkScore dict}}`` (variants ``base``, ``steered``, ``ungated``).

    Returns:
        Markdown (empty without benchmarks).
    """
    if not benchmarks:
        return ""
    variants = [v for v in VARIANT_LABELS if any(v in scores for scores in benchmarks.values())]
    header = "| benchmark | " + " | ".join(f"accuracy % ({VARIANT_LABELS[v]})" for v in variants)
    delta = [v for v in ("steered", "ungated") if v in variants and "base" in variants]
    header += "".join(f" | Δ {v} (points)" for v in delta) + " |"
    lines = [
        "General benchmarks (lm-evaluation-harness, accuracy ± standard error):",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for task, scores in benchmarks.items():
        cells = [_benchmark_label(task, scores)] + [_points(scores.get(v)) for v in variants]
        for variant in delta:
            change = 100 * (scores[variant]["accuracy"] - scores["base"]["accuracy"]) if variant in scores else None
            cells.append("n/a" if change is None else f"{change:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(
    report: EvaluationReport,
    ungated: EvaluationReport | None = None,
    benchmarks: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    """The card's fixed comparison table.

    Args:
        report: the adapter's before/after report (``base`` and ``steered`` conditions).
        ungated: the report of the same vectors without the gate, for a gated adapter.
        benchmarks: ``{task: {variant: BenchmarkScore dict}}``.

    Returns:
        Markdown: ``| measure | base | adapter | adapter without its gate |`` (the last column only for a gated
        adapter), then the judge line.
    """
    gated = ungated is not None
    header = "| measure | base | adapter |" + (" adapter without its gate |" if gated else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in report.sets.items():
        label = f"{ROLE_LABELS.get(row['role'], 'refusals')} per 100, `{name}` (n = {row['base']['n']})"
        cells = [label, _pct(row["base"].get("refusal_pct")), _pct(row["steered"].get("refusal_pct"))]
        if gated:
            cells.append(_pct(ungated.sets[name]["steered"].get("refusal_pct")) if name in ungated.sets else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    kl_cells = ["first-token KL(base ‖ ·), neutral prompts", "0"]
    for one in (report, ungated) if gated else (report,):
        kl_cells.append(f"{one.kl['mean_kl_last']:.4f}" if one.kl else "n/a")
    lines.append("| " + " | ".join(kl_cells) + " |")
    for task, scores in (benchmarks or {}).items():
        cells = [f"{_benchmark_label(task, scores)}, accuracy %", _points(scores.get("base"))]
        cells.append(_points(scores.get("steered")))
        if gated:
            cells.append(_points(scores.get("ungated")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + report.judge_line() + "\n"
