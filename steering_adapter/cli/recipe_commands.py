"""``steering-adapter run`` (a recipe end to end) and ``steering-adapter memory`` (its memory estimate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from transformers import CONFIG_MAPPING, AutoConfig
from transformers import __version__ as transformers_version

from steering_adapter.adapter.hub_access import resolve_source
from steering_adapter.cli.exit_codes import EXIT_INFEASIBLE, EXIT_OK
from steering_adapter.cli.overrides import apply_overrides
from steering_adapter.measure.evaluation_report import adapter_report_markdown
from steering_adapter.run.memory import estimate_recipe_memory, free_memory, model_config
from steering_adapter.run.pipeline import NoFeasibleChoiceError, run_recipe
from steering_adapter.run.recipe import read_recipe_yaml, recipe_from_dict, recipe_sources
from steering_adapter.run.stages.inputs import load_source
from steering_adapter.tuner.files import read_json_file
from steering_adapter.utils import distributed
from steering_adapter.utils.paths import check_output_dir

__all__ = ["check_models", "check_sources", "cmd_memory", "cmd_run"]


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
                source,
                held_out_fraction=spec.held_out_fraction,
                seed=spec.split_seed,
                language=spec.language,
                column=spec.column,
            )
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"{key}: {exc}") from None
        if not len(train) and not len(held):
            raise ValueError(f"{key}: source {source!r} has no prompts")


def check_models(recipe) -> None:
    """Check the models a recipe names (``model.name_or_path``, a transformers judge's ``judge.model``) before any
    work: a missing folder, or a Hub id neither cached nor reachable, is one line naming the key.

    Raises:
        FileNotFoundError: ``recipe.model.name_or_path: no such folder '/models/x' ...``.
        HubUnreachableError: a Hub id that is not cached while the Hub cannot be reached.
    """
    resolve_source(recipe.model.name_or_path, key="recipe.model.name_or_path", revision=recipe.model.revision)
    if recipe.judge.kind == "transformers" and recipe.judge.model:
        resolve_source(recipe.judge.model, key="recipe.judge.model")


def _config_option(path: str) -> Any:
    """``memory --config``: a config.json file, or a folder holding one, read as a transformers config.

    Raises:
        FileNotFoundError, ValueError: one line naming ``--config`` and the file.
    """
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config: {file} does not exist (give a config.json or a folder holding one)")
    try:
        data = read_json_file(file)
    except ValueError as exc:
        raise ValueError(f"--config: {exc}") from None
    if data.get("model_type") not in CONFIG_MAPPING:
        raise ValueError(
            f"--config: {file}: model_type {data.get('model_type')!r} is not one transformers "
            f"{transformers_version} knows; is it a transformers config.json?"
        )
    try:
        return AutoConfig.for_model(**data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--config: {file}: {' '.join(str(exc).split())}") from None


def cmd_memory(args: argparse.Namespace) -> int:
    recipe = _recipe_with_overrides(args.recipe, list(args.set or []))
    if args.config:
        config = _config_option(args.config)
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
    check_output_dir(recipe.output.dir, "--out" if args.out else "recipe.output.dir")
    check_sources(recipe)
    check_models(recipe)
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
