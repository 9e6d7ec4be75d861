"""The recipe schema: a YAML file that names everything a steering run needs, validated with errors that name the
bad key (``recipe.selection.alphas[2]: expected a number, got 'big'``).

A recipe names the model, the prompt sets and their split, the judge, the sampling, the estimator and λ, the
selection objective and the output folder. See ``recipes/*.yaml`` for complete, commented examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from steering_adapter.measure.benchmarks.harness import lm_eval_task
from steering_adapter.measure.jailbreaks import parse_jailbreak_source
from steering_adapter.run.recipe_sections import (
    BenchmarksSpec,
    CardSpec,
    EstimatorSpec,
    EvalSetSpec,
    GatingSpec,
    JudgeSpec,
    ModelSpec,
    OutputSpec,
    PromptsSpec,
    SamplingSpec,
    ScoringSpec,
    SelectionSpec,
)

__all__ = [
    "BenchmarksSpec",
    "CardSpec",
    "EstimatorSpec",
    "EvalSetSpec",
    "GatingSpec",
    "JudgeSpec",
    "ModelSpec",
    "OutputSpec",
    "PromptsSpec",
    "Recipe",
    "RecipeError",
    "SamplingSpec",
    "ScoringSpec",
    "SelectionSpec",
    "load_recipe",
    "read_recipe_yaml",
    "recipe_from_dict",
    "recipe_sources",
]


class RecipeError(ValueError):
    """A recipe that does not fit the schema; the message names the key path."""


@dataclass
class Recipe:
    """A complete steering run."""

    name: str
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    prompts: PromptsSpec = field(default_factory=PromptsSpec)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    estimator: EstimatorSpec = field(default_factory=EstimatorSpec)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    gating: GatingSpec = field(default_factory=GatingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    card: CardSpec = field(default_factory=CardSpec)
    benchmarks: BenchmarksSpec = field(default_factory=BenchmarksSpec)
    relevance: bool = True

    def validate(self) -> None:
        """Checks across fields (types are checked when parsing)."""
        if not self.prompts.refusal or not self.prompts.compliance:
            raise RecipeError("recipe.prompts: both 'refusal' and 'compliance' need at least one source")
        if not any(spec.role == "target" for spec in self.prompts.evaluation):
            raise RecipeError("recipe.prompts.evaluation: at least one set needs role 'target'")
        names = [spec.name for spec in self.prompts.evaluation]
        if len(set(names)) != len(names):
            raise RecipeError(f"recipe.prompts.evaluation: set names must be unique, got {names}")
        for key, source in recipe_sources(self).items():  # jailbreak:<families>:<base>: the families exist
            try:
                parse_jailbreak_source(source)
            except ValueError as exc:
                raise RecipeError(f"{key}: {exc}") from None
        if not 0 < self.prompts.held_out_fraction < 1:
            raise RecipeError("recipe.prompts.held_out_fraction: must be between 0 and 1")
        if self.sampling.k < 1 or self.sampling.max_new_tokens < 1:
            raise RecipeError("recipe.sampling: k and max_new_tokens must be >= 1")
        if self.sampling.engine_args is not None and (
            self.sampling.backend != "vllm" or not isinstance(self.sampling.engine_args, dict)
        ):
            raise RecipeError("recipe.sampling.engine_args: a mapping of vllm.LLM arguments, for backend 'vllm' only")
        if self.estimator.ridge_lambda <= 0:
            raise RecipeError("recipe.estimator.ridge_lambda: must be > 0")
        if not (math.isfinite(self.estimator.answer_scale) and self.estimator.answer_scale >= 0):
            raise RecipeError(f"recipe.estimator.answer_scale: must be >= 0, got {self.estimator.answer_scale}")
        if self.estimator.answer_scale > 0 and self.estimator.units != "separation":
            raise RecipeError(
                "recipe.estimator.answer_scale: the answer-token push is measured in separation units; it needs units "
                "'separation'"
            )
        if self.gating.ridge_lambda <= 0:
            raise RecipeError("recipe.gating.ridge_lambda: must be > 0")
        if self.selection.alphas is not None and not self.selection.alphas:
            raise RecipeError("recipe.selection.alphas: must not be empty (omit it for the default grid)")
        if not self.selection.layer_counts:
            raise RecipeError("recipe.selection.layer_counts: must not be empty")
        if self.selection.alphas and any(a == 0 for a in self.selection.alphas):
            raise RecipeError(f"recipe.selection.alphas: must be non-zero, got {self.selection.alphas}")
        fraction = self.selection.min_depth_fraction
        if fraction is not None and not 0 <= fraction < 1:
            raise RecipeError(f"recipe.selection.min_depth_fraction: must be in [0, 1) or null, got {fraction}")
        if self.selection.refine_steps < 0:
            raise RecipeError("recipe.selection.refine_steps: must be >= 0")
        if self.selection.kl_tokens is not None and self.selection.kl_tokens < 1:
            raise RecipeError("recipe.selection.kl_tokens: must be >= 1 or null")
        if self.gating.mode != "off" and not self.gating.negative:
            raise RecipeError("recipe.gating.negative: gated steering needs prompts it must leave alone")
        if any(n < 1 for n in self.selection.layer_counts):
            raise RecipeError("recipe.selection.layer_counts: every count must be >= 1")
        self._validate_benchmarks()

    def _validate_benchmarks(self) -> None:
        spec = self.benchmarks
        for index, task in enumerate(spec.tasks):
            try:
                lm_eval_task(task)
            except ValueError as error:
                raise RecipeError(f"recipe.benchmarks.tasks[{index}]: {error}") from None
        if spec.num_fewshot < 0:
            raise RecipeError(f"recipe.benchmarks.num_fewshot: must be >= 0, got {spec.num_fewshot}")
        if spec.limit is not None and spec.limit < 1:
            raise RecipeError(f"recipe.benchmarks.limit: must be >= 1 or null, got {spec.limit}")
        if spec.batch_size < 1:
            raise RecipeError(f"recipe.benchmarks.batch_size: must be >= 1, got {spec.batch_size}")
        if spec.tasks and not spec.variants:
            raise RecipeError("recipe.benchmarks.variants: name at least one of 'base', 'steered', 'ungated'")
        needed = {"base", "steered"}
        if spec.max_drop is not None and not (spec.max_drop >= 0 and needed <= set(spec.variants) and spec.tasks):
            raise RecipeError(
                "recipe.benchmarks.max_drop: a drop of >= 0 points, with tasks and the 'base' and 'steered' variants "
                "(the constraint compares them)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(tp) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        if len(options) == 1:  # Optional[X]: X's own error names the exact key (e.g. a list item)
            return _convert(value, options[0], path)
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, path)
            except RecipeError as exc:
                errors.append(exc)
        raise RecipeError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"{path}: expected null, got {value!r}")
    if origin is Literal:
        options = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(options):
            return "on" if value else "off"  # YAML 1.1 reads an unquoted on / off as true / false
        if not isinstance(value, bool) and value in options:
            return value
        raise RecipeError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{path}: expected {_describe(tp)}, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_convert(item, item_type, f"{path}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise RecipeError(f"{path}: expected {_describe(tp)}, got {value!r}")


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{path}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, spec in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{path}.{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{path}: missing required key {name!r}")
    return cls(**kwargs)


def recipe_from_dict(data: Any) -> Recipe:
    """Build and validate a :class:`Recipe` from parsed YAML.

    Raises:
        RecipeError: naming the key path of the first problem.
    """
    recipe = _build(Recipe, data, "recipe")
    recipe.validate()
    return recipe


def read_recipe_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed YAML mapping of a recipe file, before the schema is applied.

    Raises:
        FileNotFoundError: no such file.
        RecipeError: a YAML syntax error, in one line naming the file, line and column
            (``recipe.yaml:4:7: not valid YAML: mapping values are not allowed here``), or a file that is not a
            mapping.
    """
    if not Path(path).is_file():
        what = "is a folder, not a recipe file" if Path(path).is_dir() else "does not exist"
        raise FileNotFoundError(f"recipe file {str(path)!r} {what}")
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise RecipeError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a recipe YAML file.

    Raises:
        FileNotFoundError: no such file.
        RecipeError: invalid YAML or schema (the message names the file position or the key).
    """
    return recipe_from_dict(read_recipe_yaml(path))


def recipe_sources(recipe: Recipe) -> dict[str, str]:
    """Every prompt source a recipe names, keyed by where it is named (``recipe.prompts.refusal[0]``, ...)."""
    spec = recipe.prompts
    sources = {f"recipe.prompts.refusal[{i}]": s for i, s in enumerate(spec.refusal)}
    sources |= {f"recipe.prompts.compliance[{i}]": s for i, s in enumerate(spec.compliance)}
    sources |= {f"recipe.prompts.evaluation[{i}].source": e.source for i, e in enumerate(spec.evaluation)}
    if spec.neutral:
        sources["recipe.prompts.neutral"] = spec.neutral
    if recipe.gating.mode != "off":
        sources |= {f"recipe.gating.positive[{i}]": s for i, s in enumerate(recipe.gating.positive)}
        sources |= {f"recipe.gating.negative[{i}]": s for i, s in enumerate(recipe.gating.negative)}
    return sources
