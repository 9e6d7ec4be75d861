"""``steering-adapter run`` (a recipe end to end) and ``steering-adapter memory`` (its memory estimate)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from transformers import AutoConfig

from steering_adapter.cli.exit_codes import EXIT_INFEASIBLE, EXIT_OK
from steering_adapter.cli.overrides import apply_overrides
from steering_adapter.measure.evaluation_report import adapter_report_markdown
from steering_adapter.run.memory import estimate_recipe_memory, free_memory, model_config
from steering_adapter.run.pipeline import NoFeasibleChoiceError, run_recipe
from steering_adapter.run.recipe import read_recipe_yaml, recipe_from_dict, recipe_sources
from steering_adapter.run.stages.inputs import load_source
from steering_adapter.utils import distributed

__all__ = ["check_sources", "cmd_memory", "cmd_run"]


def _recipe_with_overrides(path: str, overrides: list[tuple[list[str], Any]]) -> Any:
    return recipe_from_dict(apply_overrides(read_recipe_yaml(path), overrides))


def check_sources(recipe) -> None:
    """Load every prompt source a recipe names, so a missing or empty one is reported before the model loads.

    Raises:
        ValueError: ``recipe.prompts.refusal[1]: prompt file 'x.txt' does not exist`` (the key and the problem).
    """
    spec = recipe.prompts
    for key, source in recipe_sources(recipe).items():
        try:
            train, held = load_source(
                source, held_out_fraction=spec.held_out_fraction, seed=spec.split_seed, language=spec.language
            )
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"{key}: {exc}") from None
        if not len(train) and not len(held):
            raise ValueError(f"{key}: source {source!r} has no prompts")


def cmd_memory(args: argparse.Namespace) -> int:
    recipe = _recipe_with_overrides(args.recipe, list(args.set or []))
    if args.config:
        config = AutoConfig.from_pretrained(args.config)
    else:
        config = model_config(recipe.model.name_or_path, recipe.model.revision)
    estimate = estimate_recipe_memory(recipe, config, prompt_tokens=args.prompt_tokens)
    print(f"# memory of {recipe.name} ({recipe.model.name_or_path}, {recipe.model.dtype} on {recipe.model.device})\n")
    print(estimate.table())
    free = free_memory(recipe.model.device)
    print("\nassumed: " + ", ".join(f"{key} {value}" for key, value in estimate.assumptions.items()))
    print("free now: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in free.items() if v is not None))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.out:
        overrides.append((["output", "dir"], args.out))
    if args.backend:
        overrides.append((["sampling", "backend"], args.backend))
    recipe = _recipe_with_overrides(args.recipe, overrides)
    check_sources(recipe)
    distributed.init_from_environment(recipe.model.device)  # under torchrun: join the other processes
    main = distributed.is_main()
    try:
        result = run_recipe(recipe, progress=not args.no_progress, memory_check=not args.no_memory_check)
    except NoFeasibleChoiceError as exc:
        if main:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    finally:
        distributed.shutdown()
    if not main:
        return EXIT_OK
    print()
    choice = result.selection.choice
    gate = f", gated at block {result.selection.condition['layer']}" if choice.gated else ""
    print(f"# {recipe.name}: layers {choice.layers}, alpha = {choice.alpha:g}{gate}")
    print(adapter_report_markdown(result.report, result.ungated_report))
    print(f"adapter: {result.adapter_dir}\nreport:  {result.out_dir / 'report.md'}")
    return EXIT_OK
