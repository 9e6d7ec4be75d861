"""The report of an evaluation: refusal rates per set and condition, answer quality, KL, sample answers, and its
Markdown and PNG renderings (:func:`~steering_adapter.measure.evaluation.evaluate` fills it)."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONDITIONS",
    "EvaluationReport",
    "adapter_report_markdown",
    "gate_comparison_markdown",
    "plot_refusal_rates",
    "sample_pairs",
]

CONDITIONS = ("base", "steered")


@dataclass
class EvaluationReport:
    """Results of :func:`evaluate`: ``sets[name][condition]`` summaries, capability figures and settings."""

    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    kl: dict[str, float] | None = None
    perplexity: dict[str, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal_pct(self, name: str, condition: str = "steered") -> float:
        """Percentage of judged prompts of set ``name`` classed as refusal under ``condition``."""
        return float(self.sets[name][condition]["refusal_pct"])

    def to_markdown(self) -> str:
        """The before/after table (and capability lines) as Markdown."""
        conditions = [c for c in CONDITIONS if any(c in row for row in self.sets.values())]
        header = "| set | role | n | " + " | ".join(f"refusal % ({c})" for c in conditions)
        if len(conditions) == 2:
            header += " | Δ points"
        header += " | " + " | ".join(f"relevance ({c})" for c in conditions) + " |"
        lines = [self.judge_line(), "", header, "|" + "---|" * (header.count("|") - 1)]
        for name, row in self.sets.items():
            cells = [name, row["role"], str(row[conditions[0]]["n"])]
            cells += [_fmt(row[c]["refusal_pct"]) for c in conditions]
            if len(conditions) == 2:
                cells.append(_fmt(row["steered"]["refusal_pct"] - row["base"]["refusal_pct"], signed=True))
            cells += [_fmt(row[c].get("mean_relevance"), digits=3) for c in conditions]
            lines.append("| " + " | ".join(cells) + " |")
        attack = self.attack_success_markdown(conditions)
        if attack:
            lines += ["", attack]
        if any("repetition" in row.get(c, {}) for row in self.sets.values() for c in conditions):
            lines += ["", self.quality_markdown(conditions)]
        if self.kl:
            lines.append("")
            lines.append(
                f"KL(base ‖ steered) on {self.kl['n_prompts']} neutral prompts: mean over tokens "
                f"{self.kl['mean_kl']:.4f}, at the first answer token {self.kl['mean_kl_last']:.4f}"
            )
        if self.perplexity:
            lines.append(
                "Perplexity on reference texts: "
                + ", ".join(f"{c} {value:.3f}" for c, value in self.perplexity.items())
            )
        if self.samples:
            lines += ["", self.samples_markdown()]
        return "\n".join(lines) + "\n"

    def judge_line(self) -> str:
        """Which judge counted the refusals, and how well it agrees with answers labeled by reading."""
        judge = self.settings.get("judge", "unknown")
        agreement = self.settings.get("judge_agreement")
        if not agreement:
            return f"Refusals judged by `{judge}` (its agreement with labeled answers was not measured)."
        return (
            f"Refusals judged by `{judge}`: Cohen's κ {agreement['kappa']:.2f}, accuracy {agreement['accuracy']:.2f} "
            f"against {agreement['n']} answers labeled by reading ({agreement['labels']}; see docs/judges.md)."
        )

    def attack_success_markdown(self, conditions: Sequence[str]) -> str:
        """One line per jailbreak set: its attack success (``100 − refusal %``) under each condition, overall and per
        attack family (empty without jailbreak sets)."""
        lines = []
        for name, row in self.sets.items():
            present = [c for c in conditions if "attack_success_pct" in row.get(c, {})]
            if not present:
                continue
            overall = " → ".join(f"{c} {_fmt(row[c]['attack_success_pct'])}" for c in present)
            families = ", ".join(
                f"{family} "
                + " → ".join(_fmt(row[c]["families"].get(family, {}).get("attack_success_pct")) for c in present)
                for family in row[present[0]]["families"]
            )
            lines.append(
                f"Attack success % on `{name}` (not refused, 100 − refusal %): {overall}; by family: {families}"
            )
        return "\n".join(lines)

    def quality_markdown(self, conditions: Sequence[str]) -> str:
        """Answer quality per set and condition: relevance with its 95 % interval over prompts, repetition, the share
        of answers the degeneracy detector calls looping / degenerate, and the median perplexity of the answers under
        the base model."""
        header = (
            "| set | "
            + " | ".join(
                f"relevance [95 % CI] ({c}) | repetition ({c}) | degenerate % ({c}) | base-model ppl ({c})"
                for c in conditions
            )
            + " |"
        )
        lines = ["Answer quality:", "", header, "|" + "---|" * (header.count("|") - 1)]
        for name, row in self.sets.items():
            cells = [name]
            for condition in conditions:
                entry = row.get(condition, {})
                interval = entry.get("relevance_interval")
                relevance = _fmt(entry.get("mean_relevance"), digits=3)
                if interval is not None and relevance != "n/a":
                    relevance += f" [{_fmt(interval[0], digits=3)}, {_fmt(interval[1], digits=3)}]"
                cells += [
                    relevance,
                    _fmt(entry.get("repetition"), digits=3),
                    _fmt(entry.get("degenerate_pct")),
                    _fmt(entry.get("base_perplexity")),
                ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def samples_markdown(self, max_chars: int = 300) -> str:
        """Base and steered sample answers of the target sets."""
        lines = ["### Sample answers (a seeded random sample of prompts, first answer of each, base → steered)"]
        for name, pairs in self.samples.items():
            lines.append(f"\n**{name}**\n")
            for pair in pairs:
                lines.append(f"- *{_clip(pair['prompt'], max_chars)}*")
                lines.append(f"  - base: {_clip(pair['base'], max_chars)}")
                lines.append(f"  - steered: {_clip(pair['steered'], max_chars)}")
        return "\n".join(lines)


def gate_comparison_markdown(gated: EvaluationReport, ungated: EvaluationReport) -> str:
    """Gate on vs off for one vector: a table of refusal rates (base, gated, ungated) and both KL figures.

    Args:
        gated: the report of the gated adapter (``base`` and ``steered`` conditions).
        ungated: the report of the same vectors, layers and scale without the gate (``steered`` at least).

    Returns:
        Markdown: ``| set | role | n | base | gated | Δ gated | ungated | Δ ungated |``, the attack success of the
        jailbreak sets and the KL lines.

    Raises:
        ValueError: when the reports do not cover the same sets or ``gated`` lacks the base condition.
    """
    if list(gated.sets) != list(ungated.sets):
        raise ValueError(f"reports cover different sets: {list(gated.sets)} vs {list(ungated.sets)}")
    header = "| set | role | n | refusal % (base) | gated | Δ gated | ungated | Δ ungated |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in gated.sets.items():
        if "base" not in row:
            raise ValueError(f"the gated report has no base condition for set {name!r}")
        base, on, off = row["base"]["refusal_pct"], row["steered"]["refusal_pct"], ungated.refusal_pct(name)
        cells = [name, row["role"], str(row["base"]["n"]), _fmt(base), _fmt(on), _fmt(on - base, signed=True)]
        cells += [_fmt(off), _fmt(off - base, signed=True)]
        lines.append("| " + " | ".join(cells) + " |")
    for name, row in gated.sets.items():
        if "attack_success_pct" in row["steered"]:
            off = ungated.sets[name]["steered"].get("attack_success_pct")
            lines.append(
                f"\nAttack success % on `{name}` (not refused): base {_fmt(row['base'].get('attack_success_pct'))}, "
                f"gated {_fmt(row['steered']['attack_success_pct'])}, ungated {_fmt(off)}"
            )
    for label, report in (("gated", gated), ("ungated", ungated)):
        if report.kl:
            lines.append(
                f"\nKL(base ‖ {label}) on {report.kl['n_prompts']} neutral prompts: mean over tokens "
                f"{report.kl['mean_kl']:.4f}, at the first answer token {report.kl['mean_kl_last']:.4f}"
            )
    return "\n".join(lines) + "\n"


def adapter_report_markdown(report: EvaluationReport, ungated: EvaluationReport | None = None) -> str:
    """The before/after table of an adapter and, for a gated one evaluated without its gate too, the gate on/off
    table under ``### Gate on vs off`` (what a run prints and writes into ``report.md`` and the model card)."""
    markdown = report.to_markdown()
    if ungated is not None:
        markdown += "\n### Gate on vs off (same vectors, blocks and α)\n\n" + gate_comparison_markdown(report, ungated)
    return markdown


def sample_pairs(
    prompts: Sequence[str], base: Sequence[str], steered: Sequence[str], n: int, *, seed: int
) -> list[dict[str, str]]:
    """A seeded random sample of ``n`` prompts with their first base and steered answers, in prompt order.

    A random sample, not the first ``n``: the first prompts of a set are no more typical than the others.
    """
    index = sorted(random.Random(seed).sample(range(len(prompts)), min(n, len(prompts))))
    return [{"prompt": prompts[i], "base": base[i], "steered": steered[i]} for i in index]


def _clip(text: str, max_chars: int) -> str:
    flat = " ".join(str(text).split()) or "(empty)"
    return flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…"


def _fmt(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def plot_refusal_rates(report: EvaluationReport, path: str | os.PathLike) -> str:
    """Grouped bar chart of the refusal rate of each set under each condition (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib takes seconds to import
    from matplotlib.figure import Figure  # lazy: matplotlib takes seconds to import

    names = list(report.sets)
    conditions = [c for c in CONDITIONS if any(c in row for row in report.sets.values())]
    figure = Figure(figsize=(max(5.0, 1.3 * len(names) + 2), 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(conditions)
    colours = {"base": "grey", "steered": "tab:red"}
    for i, condition in enumerate(conditions):
        values = [report.sets[n].get(condition, {}).get("refusal_pct", float("nan")) for n in names]
        positions = [x + (i - (len(conditions) - 1) / 2) * width for x in range(len(names))]
        axes.bar(positions, values, width=width, label=condition, color=colours[condition])
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels([f"{n}\n({report.sets[n]['role']})" for n in names], fontsize=8)
    axes.set_ylabel("refusal %")
    axes.set_ylim(0, 100)
    axes.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return str(path)
