"""The ``judge-check`` command: judges measured against a file of answers labeled by reading.

Each ``--judge`` is a judge kind of the recipes (``probe``, ``pattern``, ``embedding``, ``openai``, ``transformers``),
optionally behind the degeneracy detector (``degeneracy+pattern``: looping and degenerate answers are refusals, the
rest goes to the pattern judge). For each judge the command prints accuracy, Cohen's κ and refusal precision /
recall with bootstrap intervals, and the confusion table by category; its last line is
``judge=<name> n=<N> accuracy=<a> kappa=<k>`` for the first judge named (default: the recipes' default judge).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steering_adapter.cli.exit_codes import EXIT_OK
from steering_adapter.measure.judge_agreement import JudgeAgreement, measure_agreement, read_labeled_answers
from steering_adapter.measure.judges import Judge
from steering_adapter.run.recipe import JudgeSpec
from steering_adapter.run.stages.load import build_judge

__all__ = ["DEFAULT_JUDGES", "JUDGE_KINDS", "cmd_judge_check", "judge_from_name"]

JUDGE_KINDS = ("probe", "pattern", "embedding", "openai", "transformers")
DEFAULT_JUDGES = ("probe", "pattern", "degeneracy+pattern", "embedding")


def judge_from_name(name: str, args: argparse.Namespace) -> Judge:
    """The judge ``name`` names: ``KIND`` or ``degeneracy+KIND``, ``KIND`` one of :data:`JUDGE_KINDS`.

    Raises:
        ValueError: an unknown name, or an LLM judge without ``--judge-model``.
    """
    wrapped, _, kind = name.rpartition("+")
    if kind not in JUDGE_KINDS or wrapped not in ("", "degeneracy"):
        raise ValueError(f"--judge {name!r}: expected one of {list(JUDGE_KINDS)}, optionally as 'degeneracy+KIND'")
    if kind in ("openai", "transformers") and not args.judge_model:
        raise ValueError(f"--judge {name!r} needs --judge-model (the judge model's name, Hub id or folder)")
    spec = JudgeSpec(
        kind=kind,
        model=args.judge_model,
        base_url=args.judge_base_url,
        api_key_env=args.judge_api_key_env,
        degeneracy=bool(wrapped),
        verdict=args.judge_verdict if kind == "transformers" else "generate",
        max_tokens=args.judge_max_tokens if kind in ("openai", "transformers") else None,
    )
    return build_judge(spec)


def _interval(agreement: JudgeAgreement, score: str) -> str:
    value = agreement.scores[score]
    low, high = agreement.intervals.get(score, [float("nan"), float("nan")])
    return f"{score} {value:.3f} [{low:.3f}, {high:.3f}]"


def _print_agreement(agreement: JudgeAgreement) -> None:
    print(f"== {agreement.judge} (n={agreement.n}, {agreement.confidence:.0%} bootstrap intervals)")
    print("   " + "  ".join(_interval(agreement, s) for s in ("accuracy", "kappa", "precision", "recall")))
    cells = sorted({cell for row in agreement.confusion.values() for cell in row})
    width = max(len(category) for category in agreement.confusion)
    print("   " + "category".ljust(width) + "  " + "  ".join(cells))
    for category, row in sorted(agreement.confusion.items(), key=lambda item: (item[0] != "all", item[0])):
        counts = "  ".join(str(row.get(cell, 0)).rjust(len(cell)) for cell in cells)
        print("   " + category.ljust(width) + "  " + counts)


def cmd_judge_check(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; give a .json file")
    answers = read_labeled_answers(args.labels)
    names = args.judge or list(DEFAULT_JUDGES)
    judges = [judge_from_name(name, args) for name in names]  # every name checked before any judging
    results = [measure_agreement(judge, answers, n_boot=args.bootstrap, seed=args.seed) for judge in judges]
    for agreement in results:
        _print_agreement(agreement)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {out}")
    print(results[0].summary_line())
    return EXIT_OK
