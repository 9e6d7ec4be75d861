"""``steering-adapter eval``: score prompt sets with an existing adapter off and on."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import typing
from typing import Any

from steering_adapter.cli.exit_codes import EXIT_OK
from steering_adapter.cli.model_loading import (
    check_model_and_adapters,
    load_model_and_adapters,
    placement_overrides,
)
from steering_adapter.measure.benchmarks.harness import (
    BenchmarkRequest,
    check_benchmark_inputs,
    parse_benchmark,
    run_benchmark,
)
from steering_adapter.measure.comparison import benchmarks_markdown
from steering_adapter.measure.evaluation import EvalSet, evaluate
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judge_agreement import judge_agreement_summary
from steering_adapter.measure.prompt_sets import list_prompt_sets
from steering_adapter.measure.relevance import RelevanceScorer
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.run.recipe import EvalSetSpec, JudgeSpec, ModelSpec, Recipe, load_recipe
from steering_adapter.run.stages.inputs import resolve_prompts
from steering_adapter.run.stages.load import build_judge
from steering_adapter.tuner.model import steering_disabled
from steering_adapter.utils.paths import check_output_dir
from steering_adapter.utils.records import atomic_write_json, atomic_write_text

__all__ = ["ADAPTER_ARGUMENT", "ROLES", "cmd_eval"]

ROLES: tuple[str, ...] = typing.get_args(typing.get_type_hints(EvalSetSpec)["role"])
"""The roles an evaluation set can have (``target``, ``harmful``, ``benign``, ``other``)."""
ADAPTER_ARGUMENT = "eval ADAPTER"
"""How messages name ``eval``'s positional adapter argument."""


def cmd_eval(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before anything is loaded or scored
    benchmarks = [
        parse_benchmark(text, num_fewshot=args.benchmark_fewshot, batch_size=args.batch_size or 8)
        for text in args.benchmark or []
    ]
    check_benchmark_inputs([request.task for request in benchmarks], "--benchmark")
    recipe: Recipe | None = load_recipe(args.recipe) if args.recipe else None
    if args.column is not None:  # --column: the prompt column of user files, over the recipe's prompts.column
        base = recipe if recipe is not None else Recipe(name="eval")
        recipe_for_split = dataclasses.replace(base, prompts=dataclasses.replace(base.prompts, column=args.column))
    else:
        recipe_for_split = recipe
    column_option = "--column" if args.column is not None or recipe is None else "recipe.prompts.column (or --column)"
    sampling = recipe.sampling if recipe is not None else None

    def pick(value: Any, recipe_value: Any, default: Any) -> Any:
        if value is not None:
            return value
        return recipe_value if recipe is not None else default

    specs = [_parse_set(text) for text in args.sets] if args.sets else None
    if specs is None:
        if recipe is None:
            raise ValueError("give --sets NAME=SOURCE:ROLE ... or --recipe RECIPE (its evaluation sets)")
        specs = [(spec.name, spec.source, spec.role) for spec in recipe.prompts.evaluation]
    check_model_and_adapters(args.model, [args.adapter], ADAPTER_ARGUMENT)
    seed = pick(args.seed, sampling.seed if sampling else None, 0)
    # every prompt source is read and checked before the model is loaded
    sets = [
        EvalSet(name, _eval_prompts(source, args.split, recipe_for_split, args.sample, seed, column_option), role)
        for name, source, role in specs
    ]
    kl_source = args.kl_prompts or (recipe.prompts.neutral if recipe is not None else None)
    kl = (
        _eval_prompts(kl_source, args.split, recipe_for_split, args.sample, seed, column_option) if kl_source else None
    )
    total = sum(len(s.prompts) for s in sets)
    print(
        f"[eval] scoring {total} prompts ({args.split}): "
        + ", ".join(f"{s.name} {len(s.prompts)} ({s.role})" for s in sets)
        + (f"; KL on {len(kl)} neutral prompts" if kl else ""),
        flush=True,
    )
    backend = args.backend or (sampling.backend if sampling is not None else "transformers")
    if benchmarks and backend != "transformers":
        raise ValueError(
            "--benchmark: lm-evaluation-harness scores the transformers model: use --backend transformers"
        )

    model, tokenizer = load_model_and_adapters(
        args.model,
        [args.adapter],
        args.scale,
        recipe.model if recipe is not None else None,
        placement_overrides(args),
        adapter_option=ADAPTER_ARGUMENT,
        backend=backend,
        engine=dict(sampling.engine_args or {}) if sampling is not None else None,
    )
    relevance = None
    if not args.no_relevance and (recipe is None or recipe.relevance):
        relevance = RelevanceScorer()
    if args.judge is not None:
        judge_spec = JudgeSpec(kind=args.judge)
    else:
        judge_spec = recipe.judge if recipe is not None else JudgeSpec()
    judge = build_judge(judge_spec, _model_placement(recipe, args))
    report = evaluate(
        model,
        tokenizer,
        sets,
        judge,
        args.out,
        settings=EvaluationSettings(
            kl_prompts=kl,
            relevance=relevance,
            batch_size=pick(args.batch_size, sampling.batch_size if sampling else None, 8),
            progress=not args.no_progress,
            judge_agreement=judge_agreement_summary(judge) if judge_spec.measures_agreement() else None,
            unparseable=pick(args.unparseable, recipe.scoring.unparseable if recipe else None, "keep"),
        ),
        sampling=SamplingSettings(
            k=pick(args.k, sampling.k if sampling else None, 3),
            max_new_tokens=pick(args.max_new_tokens, sampling.max_new_tokens if sampling else None, 64),
            temperature=pick(args.temperature, sampling.temperature if sampling else None, 1.0),
            top_p=sampling.top_p if sampling else 1.0,
            seed=seed,
            system_prompt=recipe.model.system_prompt if recipe is not None else None,
        ),
    )
    if backend == "vllm":
        model.close()
    markdown = report.to_markdown()
    if benchmarks:
        markdown += "\n" + benchmarks_markdown(_benchmark(model, tokenizer, benchmarks, args))
    print(markdown)
    print(f"report: {args.out}/report.md")
    return EXIT_OK


def _benchmark(model: Any, tokenizer: Any, requests: list[BenchmarkRequest], args: argparse.Namespace) -> dict:
    """Run each benchmark on the base model (steering off) and the steered one; add them to ``report.json`` and
    ``report.md`` under ``--out``.

    Returns:
        ``{task: {"base": score dict, "steered": score dict}}``.
    """
    results: dict[str, Any] = {}
    for request in requests:
        print(f"[eval] {request.task} through lm-evaluation-harness: base, then steered", flush=True)
        with steering_disabled(model):
            base = run_benchmark(model, tokenizer, request, progress=not args.no_progress)
        steered = run_benchmark(model, tokenizer, request, progress=not args.no_progress)
        results[request.task] = {"base": base.to_dict(), "steered": steered.to_dict()}
    out = args.out
    path = f"{out}/report.json"
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    atomic_write_json(path, {**saved, "benchmarks": results})
    with open(f"{out}/report.md", encoding="utf-8") as handle:
        text = handle.read()
    atomic_write_text(f"{out}/report.md", text + "\n" + benchmarks_markdown(results))
    return results


def _model_placement(recipe: Any, args: argparse.Namespace) -> Any:
    """The dtype and device a local judge model gets: the evaluated model's (recipe, then command-line options)."""
    return dataclasses.replace(recipe.model if recipe is not None else ModelSpec(), **placement_overrides(args))


SETS_SYNTAX = (
    "NAME=SOURCE:ROLE, e.g. political=organism:political:target jbb=jbb_harmful:harmful mine=prompts.txt:benign; "
    f"ROLE is one of {', '.join(ROLES)}; SOURCE is organism:<category or topic>, a known set "
    f"({', '.join(list_prompt_sets())}), a .txt / .csv / .json / .jsonl file, hf:org/name, or jailbreak:<source> (its "
    "prompts wrapped in attack families)"
)


def _parse_set(text: str) -> tuple[str, str, str]:
    """``NAME=SOURCE:ROLE`` -> ``(name, source, role)``.

    Raises:
        ValueError: one line naming ``--sets``, the expected syntax, the roles and the sources.
    """
    parts = text.split("=", 1)
    if len(parts) != 2 or not parts[0] or ":" not in parts[1]:
        raise ValueError(f"--sets {text!r}: expected {SETS_SYNTAX}")
    source, role = parts[1].rsplit(":", 1)
    if role not in ROLES:
        raise ValueError(f"--sets {text!r}: {role!r} is not a role (is the role left out?); expected {SETS_SYNTAX}")
    return parts[0], source, role


def _eval_prompts(
    source: str, split: str, recipe: Any, sample: int | None, seed: int, column_option: str = "--column"
) -> list[str]:
    """The prompts of ``source`` for ``eval``: the whole source (``split="all"``) or a part of the recipe's split
    (defaults without a recipe), then a seeded sample of ``sample`` prompts when asked."""
    split_recipe = recipe if recipe is not None else Recipe(name="eval")
    prompts = resolve_prompts(source, split, split_recipe, capped=False, column_option=column_option)
    if not prompts:
        raise ValueError(f"no prompts in {source!r} ({split})")
    if sample is not None:
        if sample < 1:
            raise ValueError(f"--sample must be >= 1, got {sample}")
        if sample < len(prompts):
            chosen = sorted(random.Random(seed).sample(range(len(prompts)), sample))
            prompts = [prompts[i] for i in chosen]
    return prompts
