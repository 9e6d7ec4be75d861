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

from steering_adapter.run.selection.objective import SelectionObjective


class RecipeError(ValueError):
    """A recipe that does not fit the schema; the message names the key path."""


@dataclass
class ModelSpec:
    """The model under study.

    Attributes:
        name_or_path: ``"organism"`` for the embedded model organism, else a Hub id or local folder.
        revision: exact revision of a Hub model.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: torch device (``"cpu"``, ``"cuda"``; under torchrun ``"cuda"`` is each process's own GPU) or a
            transformers device map (``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``) that spreads
            the blocks of one process's model over the visible GPUs.
        system_prompt: optional system message before every prompt.
    """

    name_or_path: str = "organism"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    system_prompt: str | None = None


@dataclass
class EvalSetSpec:
    """A held-out evaluation set: ``source`` is a prompt-set name, ``organism:<category or topic>`` or a file."""

    name: str
    source: str
    role: Literal["target", "harmful", "benign", "other"]


@dataclass
class PromptsSpec:
    """Where the prompts come from and how they are split.

    Attributes:
        refusal: sources of prompts expected to be refused (the refusal side of the direction, after judging).
        compliance: sources of prompts expected to be answered (the compliance side).
        evaluation: held-out sets with their roles (selection and the final before/after report).
        neutral: source of neutral prompts for the KL divergence (held-out part).
        held_out_fraction: share of each shared/user set kept for evaluation (organism sets have their own split).
        split_seed: seed of the deterministic split.
        max_train_per_set: cap on training prompts per source (``None``: all).
        max_eval_per_set: cap on held-out prompts per set (``None``: all).
        language: keep only prompts of this language in sets that mix (deccp): ``"en"``, ``"zh"`` or ``None``.
        column: the column (CSV) or field (JSON / JSONL, Hub datasets) holding the prompt in user files that have no
            ``prompt`` one (``None``: ``prompt``, any case); known sets and ``.txt`` files ignore it.
    """

    refusal: list[str] = field(default_factory=list)
    compliance: list[str] = field(default_factory=list)
    evaluation: list[EvalSetSpec] = field(default_factory=list)
    neutral: str | None = None
    held_out_fraction: float = 0.2
    split_seed: int = 0
    max_train_per_set: int | None = None
    max_eval_per_set: int | None = None
    language: Literal["en", "zh"] | None = "en"
    column: str | None = None


@dataclass
class JudgeSpec:
    """The refusal judge.

    Attributes:
        kind: ``"pattern"`` (keyword baseline), ``"embedding"`` (the learned judge fitted on the package's labeled
            answers, :func:`~steering_adapter.measure.judges.default_embedding_judge`; no endpoint, seconds on CPU),
            ``"openai"`` (LLM judge behind an OpenAI-compatible endpoint) or ``"transformers"`` (LLM judge run
            locally). See docs/judges.md for each judge's agreement with labeled answers.
        model: judge model name (openai) or Hub id / folder (transformers).
        degeneracy: put the degeneracy detector in front of the judge: looping / degenerate answers are refusals
            (:class:`~steering_adapter.measure.judges.DegeneracyJudge`; the embedding judge always does this).
        verdict: how the transformers judge gives its verdict: ``"generate"`` (it reasons briefly, then the tag) or
            ``"tag_probability"`` (P(refusal) from the two tag replies' log-probabilities, no generation; for small
            judges, :class:`~steering_adapter.measure.judges.TagProbabilityJudge`).
        max_tokens: generation budget per verdict of an LLM judge (``None``: the backend's default).
        check: measure the judge on the package's labeled test answers (248, docs/judges.md) and name its κ beside
            the report's refusal rates; ``None`` (default): for the pattern and embedding judges (seconds), not for
            LLM judges (one verdict per labeled answer).
        base_url: endpoint for ``openai`` (default ``STEERING_JUDGE_BASE_URL``).
        api_key_env: name of the environment variable holding the API key; the key is sent only when this names
            one (never a fallback to ``OPENAI_API_KEY``), and only over https or to this machine.
        max_concurrency: parallel requests (openai).
        extra_refusal_patterns: phrases added to the pattern judge's defaults.
        ignore_prompt_echoes: the pattern judge does not count a phrase the prompt itself contains (e.g. the
            "sensitive" of "Why is X a sensitive topic?" repeated in an answer); see
            :class:`~steering_adapter.measure.judges.PatternJudge`.
    """

    kind: Literal["pattern", "embedding", "openai", "transformers"] = "pattern"
    model: str | None = None
    degeneracy: bool = False
    verdict: Literal["generate", "tag_probability"] = "generate"
    max_tokens: int | None = None
    check: bool | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = 4
    extra_refusal_patterns: list[str] = field(default_factory=list)
    ignore_prompt_echoes: bool = False

    def measures_agreement(self) -> bool:
        """Whether the judge is measured on the labeled answers for the reports (see ``check``)."""
        return self.check if self.check is not None else self.kind in ("pattern", "embedding")


@dataclass
class SamplingSpec:
    """Answer sampling for judging (authors: K = 5, temperature 1.0).

    Attributes:
        backend: ``"transformers"`` (the loaded model) or ``"vllm"`` (a vLLM engine on the same model samples the
            judged answers of scoring, selection and evaluation; activations still come from the loaded model).
        engine_args: extra ``vllm.LLM`` arguments for the ``vllm`` backend (``tensor_parallel_size``,
            ``gpu_memory_utilization``, ``max_model_len``, ...).
    """

    k: int = 5
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    backend: Literal["transformers", "vllm"] = "transformers"
    engine_args: Any = None


@dataclass
class EstimatorSpec:
    """Direction estimation.

    Attributes:
        method: ``"md"``, ``"rmd"`` or ``"wrmd"``.
        ridge_lambda: λ (absolute, or relative to trace(Σ)/d when ``lambda_mode="relative"``).
        lambda_mode: ``"absolute"`` or ``"relative"``.
        position: ``"last"`` prompt token or ``"mean"`` over prompt tokens.
        layers: candidate layers (``None``: all blocks).
        units: ``"separation"`` (default): each vector is ``s·u``, the unit direction times the classes' mean
            separation along it, so ``α = −1`` moves the refused prompts' mean onto the complied prompts' mean on any
            model and the default α grids carry over; ``"raw"``: the estimator's closed form (its norm depends on the
            model and λ, so α grids must be calibrated per model).
        covariance: RMD / WRMD: ``"compliance"`` (the method's Σ_c) or ``"pooled"`` (pooled within-class). Either keeps
            one ``d × d`` float64 matrix per candidate block (MD keeps none): ``8 · L · (2·d + d²)`` bytes.
        answer_scale: ``ρ >= 0``. ``0`` (default): the vector is the direction at ``position``. ``ρ > 0``: the same
            estimator is fitted a second time on the model's own answers to the training prompts (mean over the answer
            tokens, teacher-forced; the answers the prompts were scored with) and the vector becomes
            ``s·(û_prompt + ρ·û_answer)`` (:func:`~steering_adapter.directions.linear_algebra.mix_directions`): the
            prompt direction in separation units plus a push ``ρ`` times as long along the answer direction. The
            vector is added at generated tokens too; this puts there the direction the refusal takes while it is
            written. Needs ``units: separation``; one more forward pass over the training prompts and their answers.
    """

    method: Literal["md", "rmd", "wrmd"] = "rmd"
    ridge_lambda: float = 0.1
    lambda_mode: Literal["absolute", "relative"] = "relative"
    position: Literal["last", "mean"] = "last"
    layers: list[int] | None = None
    units: Literal["raw", "separation"] = "separation"
    covariance: Literal["compliance", "pooled"] = "compliance"
    answer_scale: float = 0.0


@dataclass
class SelectionSpec:
    """The layer / α sweep and its objective (see :mod:`steering_adapter.run.selection`).

    Attributes:
        goal: ``"remove"`` or ``"induce"`` the target refusals.
        layer_counts: numbers of top-ranked layers to try.
        min_depth_fraction: steer only blocks at or after this fraction of the decoder's depth (``0.5``: the second
            half; ``None``: every block). Ignored when ``estimator.layers`` names the candidate blocks.
        alphas: the α grid (``None``: ``−0.5, −1, −2, −4, −8`` to remove, the same positive to induce, in
            separation units).
        refine_steps: golden-section evaluations of α around the best feasible grid point (``0``: grid only).
        delta: allowed change of the constrained sets, in percentage points.
        kl_budget: maximum mean KL(base ‖ steered) on the neutral prompts (``None``: unconstrained).
        kl_tokens: positions per neutral prompt in the KL (the last ones; ``None``: all).
        min_relevance: absolute relevance floor of the answers that must stay answers (``None``: off).
        relevance_ratio: relative floor: this fraction of the base model's relevance on benign answers (``None``: off).
        max_repetition: ceiling on the mean share of repeated 3-grams per answer (``None``: off).
        max_perplexity_ratio: ceiling on the answers' median perplexity under the base model, relative to the base
            model's own answers (``None``: off).
        near_tie: target-rate difference (points) treated as a tie, won by the smaller |α| (``None``: one prompt).
        max_prompts_per_set: cap on selection prompts per set.
    """

    goal: Literal["remove", "induce"] = "remove"
    layer_counts: list[int] = field(default_factory=lambda: [1, 2, 4])
    min_depth_fraction: float | None = 0.5
    alphas: list[float] | None = None
    refine_steps: int = 3
    delta: float = 5.0
    kl_budget: float | None = 0.5
    kl_tokens: int | None = 16
    min_relevance: float | None = 0.2
    relevance_ratio: float | None = 0.8
    max_repetition: float | None = 0.35
    max_perplexity_ratio: float | None = 10.0
    near_tie: float | None = None
    max_prompts_per_set: int | None = None

    def objective(self) -> SelectionObjective:
        """The :class:`~steering_adapter.run.selection.SelectionObjective` of these settings (its fields, by name)."""
        names = [f.name for f in dataclasses.fields(SelectionObjective)]
        return SelectionObjective(**{name: getattr(self, name) for name in names})


@dataclass
class GatingSpec:
    """Condition-gated steering (see :mod:`steering_adapter.directions.conditions`).

    Attributes:
        mode: ``"off"`` (plain steering), ``"compare"`` (the sweep tries ungated and gated variants and keeps the
            best by the objective) or ``"on"`` (gated variants only).
        positive: sources of prompts the adapter should steer (default: ``prompts.refusal``).
        negative: sources of prompts it must leave alone (e.g. harmful and benign sets).
        layers: candidate condition blocks (default: the first half of the decoder).
        position: ``"last"`` prompt token or ``"mean"`` over the prompt.
        max_false_positive_rate: cap on the share of held-out negative prompts (per source) the gate may select
            (``None``: best balanced accuracy).
        method: condition direction, ``"md"`` (mean difference) or ``"rmd"`` (ridge: discounts what varies among
            the negative prompts, so fewer of them pass the gate).
        ridge_lambda: relative ``λ`` of ``"rmd"`` (``λ · trace(Σ_neg) / d``).
    """

    mode: Literal["off", "compare", "on"] = "off"
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    layers: list[int] | None = None
    position: Literal["last", "mean"] = "last"
    max_false_positive_rate: float | None = None
    method: Literal["md", "rmd"] = "md"
    ridge_lambda: float = 1.0


@dataclass
class OutputSpec:
    """Where the run writes (records, adapter, report, plots)."""

    dir: str = "runs/recipe"
    adapter_name: str | None = None


@dataclass
class CardSpec:
    """Model-card text the run cannot measure (it goes into the adapter's ``steering_metadata`` and its card).

    Attributes:
        intended_use: what the adapter is for and for whom.
        limitations: known limits beyond the measured table.
        license: SPDX id for the card's front matter (e.g. ``apache-2.0``), or ``None``.
    """

    intended_use: str | None = None
    limitations: str | None = None
    license: str | None = None


@dataclass
class Recipe:
    """A complete steering run."""

    name: str
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    prompts: PromptsSpec = field(default_factory=PromptsSpec)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    estimator: EstimatorSpec = field(default_factory=EstimatorSpec)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    gating: GatingSpec = field(default_factory=GatingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    card: CardSpec = field(default_factory=CardSpec)
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
