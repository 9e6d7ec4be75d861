"""The recipe runner: sample → judge → score → collect → estimate → select → evaluate → save.

Each stage reads what the previous one wrote and every long stage is resumable (JSONL records, atomic JSON), so a
killed run continues where it stopped when the same command is run again. The held-out part of every evaluation set
is split once more: one half chooses the layers and α (selection), the other half gives the final before/after
report (test), so the reported numbers are not the ones the choice was tuned on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import distributed
from .activations import ActivationCollector
from .builder import adapter_from_vectors, save_adapter
from .conditions import ConditionFit, fit_condition
from .datasets import PromptSet, load_prompt_set, split_prompts
from .diagnostics import diagnose_from_model
from .embedded import is_embedded, load_embedded
from .estimators import VECTOR_UNITS, fit_directions, make_estimator
from .evaluation import EvalSet, EvaluationReport, adapter_report_markdown, evaluate
from .judges.base import Judge
from .recipes import JudgeSpec, ModelSpec, Recipe
from .records import atomic_write_json, atomic_write_text
from .samplers import Sampler, TransformersSampler
from .scoring_run import score_prompts
from .selection import SweepResult, default_alphas, sweep_layers_and_scale

ORGANISM_PREFIX = "organism:"
# ModelSpec.device values that mean "dispatch the blocks over the visible devices" (transformers' device_map)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


class NoFeasibleChoiceError(RuntimeError):
    """The selection found no (layers, α) that meets the recipe's constraints."""


@dataclass
class RunResult:
    """What :func:`run_recipe` produced."""

    out_dir: Path
    adapter_dir: Path | None
    selection: SweepResult
    report: EvaluationReport | None
    ungated_report: EvaluationReport | None = None


# ------------------------------------------------------------------------------------------------ loading
def load_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer a recipe names (an embedded model such as ``"organism"`` or ``"smollm2-censored"``
    is built locally, no download; see :mod:`steering_adapter.embedded`).

    ``spec.device`` is a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``; under torchrun ``"cuda"`` is this
    process's ``cuda:LOCAL_RANK``) or a transformers ``device_map`` (``"auto"``, ``"balanced"``, ``"balanced_low_0"``,
    ``"sequential"``) that spreads the blocks over the visible GPUs (and CPU) of one process.
    """
    dtype = getattr(torch, spec.dtype)
    device = distributed.local_device(spec.device)
    if is_embedded(spec.name_or_path):
        model, tokenizer = load_embedded(spec.name_or_path, dtype=dtype)
        if device in DEVICE_MAPS:  # one small model: the first GPU when there is one
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path, revision=spec.revision)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": spec.revision}
    if device in DEVICE_MAPS:
        kwargs["device_map"] = device
    model = AutoModelForCausalLM.from_pretrained(spec.name_or_path, **kwargs)
    if device not in DEVICE_MAPS:
        model = model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def build_sampler(recipe: Recipe, model: torch.nn.Module, tokenizer: Any) -> Sampler:
    """The backend that samples the judged answers: the loaded model, or a vLLM engine on the same model."""
    if recipe.sampling.backend == "vllm":
        from .vllm.sampler import VllmSampler

        return VllmSampler.from_model_spec(recipe.model, **(recipe.sampling.engine_args or {}))
    return TransformersSampler(model, tokenizer)


def build_judge(spec: JudgeSpec, model: ModelSpec | None = None) -> Judge:
    """The judge a recipe names; a transformers judge is loaded in ``model``'s dtype on its device (default float32
    on CPU)."""
    from .judges import LLMJudge, OpenAIChatBackend, PatternJudge, TransformersJudgeBackend
    from .judges.pattern import DEFAULT_REFUSAL_PATTERNS

    if spec.kind == "pattern":
        return PatternJudge(refusal_patterns=(*DEFAULT_REFUSAL_PATTERNS, *spec.extra_refusal_patterns))
    if spec.kind == "openai":
        backend = OpenAIChatBackend(
            base_url=spec.base_url,
            api_key_env=spec.api_key_env,
            model=spec.model,
            max_concurrency=spec.max_concurrency,
        )
        return LLMJudge(backend)
    if spec.model is None:
        raise ValueError("recipe.judge.model: the transformers judge needs a model id or folder")
    placement = model or ModelSpec()
    judge_model, tokenizer = load_model(
        ModelSpec(name_or_path=spec.model, dtype=placement.dtype, device=placement.device)
    )
    return LLMJudge(TransformersJudgeBackend(judge_model, tokenizer))


def resolve_prompts(source: str, part: str, recipe: Recipe, *, capped: bool = True) -> list[str]:
    """Prompts of ``source`` for ``part`` (``"train"``, ``"selection"``, ``"test"`` or ``"all"``).

    ``organism:<category or topic>`` uses the organism's own train / held-out split; any other source (a known set
    name or a file) is split with ``recipe.prompts.held_out_fraction``. The held-out side is halved again into
    ``selection`` and ``test``; ``"all"`` is every prompt of the source (train first). ``capped=False`` ignores the
    recipe's ``max_train_per_set`` / ``max_eval_per_set``.
    """
    spec = recipe.prompts
    train, held = load_source(
        source, held_out_fraction=spec.held_out_fraction, seed=spec.split_seed, language=spec.language
    )
    if part == "all":
        return train.prompts + held.prompts
    if part not in ("train", "selection", "test"):
        raise ValueError(f"unknown part {part!r}; expected 'train', 'selection', 'test' or 'all'")
    if part == "train":
        return train.prompts[: spec.max_train_per_set if capped else None]
    if len(held) < 2:
        raise ValueError(f"{source!r}: only {len(held)} held-out prompts; need at least 2 to split selection/test")
    selection, test = split_prompts(held, held_out_fraction=0.5, seed=spec.split_seed + 1)
    chosen = selection if part == "selection" else test
    return chosen.prompts[: spec.max_eval_per_set if capped else None]


def load_source(
    source: str, *, held_out_fraction: float = 0.2, seed: int = 0, language: str | None = "en"
) -> tuple[PromptSet, PromptSet]:
    """``(train, held_out)`` prompts of a source: ``organism:<category, topic or source>`` (the organism's own
    split), a known prompt-set name (``language`` filters deccp) or a user file (split deterministically)."""
    if source.startswith(ORGANISM_PREFIX):
        from .organism.data import load_examples

        key = source[len(ORGANISM_PREFIX) :]
        examples = [e for e in load_examples() if key in (e.category, e.topic, e.source)]
        if not examples:
            raise ValueError(f"{source!r}: no organism prompts with category, topic or source {key!r}")
        return (
            PromptSet(source, [e.prompt for e in examples if e.split == "train"]),
            PromptSet(source, [e.prompt for e in examples if e.split == "heldout"]),
        )
    full = load_prompt_set(source, language=language if source.startswith("deccp") else None)
    return split_prompts(full, held_out_fraction=held_out_fraction, seed=seed)


def _eval_sets(recipe: Recipe, part: str, cap: int | None = None) -> list[EvalSet]:
    return [
        EvalSet(spec.name, resolve_prompts(spec.source, part, recipe)[:cap], spec.role)
        for spec in recipe.prompts.evaluation
    ]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tensor_digest(tensors: dict[Any, torch.Tensor]) -> str:
    """Hash of the exact values of named tensors (for stage fingerprints)."""
    digest = hashlib.sha256()
    for name in sorted(tensors, key=str):
        digest.update(str(name).encode())
        digest.update(tensors[name].detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


STAGE_FILE = "stage.json"


class StageTimes:
    """Wall time per pipeline stage (``with times("select"): ...``), accumulated and written to ``timings.json``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 2)


def stage_dir(path: Path, fingerprint: str, log: Callable[[str], None]) -> Path:
    """The folder of a resumable stage whose records depend on ``fingerprint`` (vectors, gate, prompts, settings).

    The answer records are keyed by prompt and sampling settings only (see :mod:`steering_adapter.scoring_run`), so a
    folder written for other vectors or another gate must not be resumed: it is moved aside to
    ``<name>.stale-<old fingerprint>`` (nothing is deleted) and the stage starts afresh.

    Returns:
        ``path``, existing, with ``stage.json`` recording ``fingerprint``.
    """
    marker = path / STAGE_FILE
    if path.exists():
        old = json.loads(marker.read_text()).get("fingerprint") if marker.is_file() else None
        if old == fingerprint:
            return path
        if old is not None or any(path.iterdir()):
            aside = path.with_name(f"{path.name}.stale-{old or 'unknown'}")
            if aside.exists():
                aside = path.with_name(f"{aside.name}-{time.strftime('%Y%m%dT%H%M%S')}")
            path.rename(aside)
            log(f"[resume] {path} was computed for other vectors or settings; moved to {aside.name}, starting afresh")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"fingerprint": fingerprint})
    return path


# ------------------------------------------------------------------------------------------------ stages
def estimate_directions(
    model: torch.nn.Module,
    tokenizer: Any,
    recipe: Recipe,
    judge: Judge,
    out: Path,
    progress: bool,
    log: Callable[[str], None],
    times: StageTimes | None = None,
    sampler: Sampler | None = None,
) -> tuple[dict[int, torch.Tensor], list[int], dict[str, Any]]:
    """Score the training prompts (answers from ``sampler``, default the model), collect activations, fit one
    direction per layer and diagnose them.

    Returns:
        ``(directions, layer ranking, provenance)``; cached in ``out/directions`` for reruns.
    """
    refusal = [p for s in recipe.prompts.refusal for p in resolve_prompts(s, "train", recipe)]
    compliance = [p for s in recipe.prompts.compliance for p in resolve_prompts(s, "train", recipe)]
    prompts = list(dict.fromkeys(refusal + compliance))
    sampling = _sampling(recipe)
    key = _fingerprint(prompts, sampling, recipe.estimator, recipe.model, getattr(judge, "name", ""))
    cache = out / "directions"

    def cached() -> tuple[dict[int, torch.Tensor], list[int], dict[str, Any]] | None:
        if (cache / "directions.json").is_file():
            meta = json.loads((cache / "directions.json").read_text())
            if meta.get("fingerprint") == key:
                tensors = load_file(str(cache / "directions.safetensors"))
                return {int(k): v for k, v in tensors.items()}, meta["ranking"], meta["provenance"]
        return None

    reused = distributed.from_main(cached)  # rank 0's files decide for every process
    if reused is not None:
        log(f"[estimate] reusing directions from {cache}")
        return reused

    times = times or StageTimes()
    log(f"[score] {len(prompts)} training prompts × K={recipe.sampling.k} answers, judge {judge.name}")
    with times("score training prompts"):
        scores = score_prompts(
            sampler or model,
            tokenizer,
            prompts,
            judge,
            stage_dir(out / "train_scores", _fingerprint(recipe.model), log),  # records are per model
            batch_size=recipe.sampling.batch_size,
            progress=progress,
            **sampling,
        )
    values = [s.score for s in scores]
    n_refusal = sum(v > 0.1 for v in values if not math.isnan(v))
    n_compliance = sum(v < -0.1 for v in values if not math.isnan(v))
    n_other = len(values) - n_refusal - n_compliance
    log(f"[score] refused {n_refusal}, complied {n_compliance}, neutral/unjudged {n_other}")
    if n_refusal < 2 or n_compliance < 2:
        raise ValueError(
            f"the judge found {n_refusal} refused and {n_compliance} complied training prompts; each side needs at "
            "least 2 (check the prompt sources and the judge)"
        )
    est = recipe.estimator
    params: dict[str, Any] = {"units": est.units}
    if est.method != "md":
        params.update(ridge_lambda=est.ridge_lambda, lambda_mode=est.lambda_mode, covariance=est.covariance)
    estimator = make_estimator(est.method, **params)
    needed = estimator.required_statistics()  # only the moments this estimator reads, only for the candidate blocks
    collector = ActivationCollector(
        model,
        tokenizer,
        est.layers,
        position=est.position,
        batch_size=recipe.sampling.batch_size,
        system_prompt=recipe.model.system_prompt,
        second_moments=needed.second_moments,
        progress=progress,
    )
    hidden_size = collector.hidden_size
    log(
        f"[collect] activations at the {est.position} prompt token on {len(collector.layers)} blocks: "
        f"{needed.second_moments} second moments, {needed.nbytes(len(collector.layers), hidden_size) / 2**20:.1f} MiB"
    )
    with times("collect activations"):
        collected = collector.collect(prompts, scores=values, weighting=needed.weighting)
    stats = collected.stats if needed.weighting == "none" else collected.weighted_stats
    directions = fit_directions(estimator, stats)
    del collected, stats  # the sums are freed before the diagnostics pass
    with times("diagnostics"):  # projections h·v̂ streamed from a second pass, not kept activations
        diagnostics = diagnose_from_model(collector, prompts, directions, scores=values)
    diagnostics.save(out / "diagnostics")
    ranking = diagnostics.best_layers()
    best = diagnostics.layer(ranking[0])
    log(
        f"[estimate] {est.method.upper()} directions on {len(directions)} layers; best layer {best.layer} "
        f"(AUC {best.auc}, r {best.pearson_r})"
    )
    provenance = {
        "method": est.method,
        "ridge_lambda": est.ridge_lambda if est.method != "md" else None,
        "lambda_mode": est.lambda_mode if est.method != "md" else None,
        "position": est.position,
        "vector_units": VECTOR_UNITS[est.units],
        "sample_counts": {"refusal": n_refusal, "compliance": n_compliance, "prompts": len(prompts)},
        "datasets": {"refusal": recipe.prompts.refusal, "compliance": recipe.prompts.compliance},
        "judge": dataclasses.asdict(recipe.judge),
        "sampling": sampling,
        "diagnostics": {
            str(d.layer): {"auc": d.auc, "pearson_r": d.pearson_r, "norm": d.norm} for d in diagnostics.layers
        },
    }
    cache.mkdir(parents=True, exist_ok=True)
    save_file({str(k): v.contiguous() for k, v in directions.items()}, str(cache / "directions.safetensors"))
    atomic_write_json(cache / "directions.json", {"fingerprint": key, "ranking": ranking, "provenance": provenance})
    return distributed.broadcast_object((directions, ranking, provenance))  # every process steers with rank 0's


def fit_recipe_condition(
    model: torch.nn.Module, tokenizer: Any, recipe: Recipe, progress: bool, log: Callable[[str], None]
) -> ConditionFit | None:
    """The recipe's condition for gated steering (``None`` when ``gating.mode`` is ``"off"``).

    Directions come from the training prompts; block and threshold from the selection half of the held-out prompts.
    """
    gating = recipe.gating
    if gating.mode == "off":
        return None
    positive = gating.positive or recipe.prompts.refusal

    def gather(sources: list[str], part: str) -> tuple[list[str], list[int]]:
        prompts, groups = [], []
        for group, source in enumerate(sources):
            found = resolve_prompts(source, part, recipe)
            prompts += found
            groups += [group] * len(found)
        return prompts, groups

    negative_train, train_groups = gather(gating.negative, "train")
    negative_held, held_groups = gather(gating.negative, "selection")
    fit = fit_condition(
        model,
        tokenizer,
        gather(positive, "train")[0],
        negative_train,
        gather(positive, "selection")[0],
        negative_held,
        layers=gating.layers,
        position=gating.position,
        method=gating.method,
        ridge_lambda=gating.ridge_lambda,
        negative_train_groups=train_groups,
        negative_heldout_groups=held_groups,
        max_false_positive_rate=gating.max_false_positive_rate,
        batch_size=recipe.sampling.batch_size,
        system_prompt=recipe.model.system_prompt,
        progress=progress,
    )
    fit = distributed.broadcast_object(fit)
    log(
        f"[condition] block {fit.layer}, threshold {fit.threshold:.3f}: held-out balanced accuracy "
        f"{fit.heldout_balanced_accuracy:.3f} (selects {fit.heldout_tpr:.0%} of targets, "
        f"{fit.heldout_fpr:.0%} of others)"
    )
    return fit


def _sampling(recipe: Recipe) -> dict[str, Any]:
    s = recipe.sampling
    return {
        "k": s.k,
        "max_new_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "system_prompt": recipe.model.system_prompt,
    }


def run_recipe(
    recipe: Recipe, *, progress: bool = True, log: Callable[[str], None] = print, memory_check: bool = True
) -> RunResult:
    """Run a recipe end to end; see the module docstring.

    Under ``torchrun`` every process runs this with the same recipe (see :mod:`steering_adapter.distributed`): rank 0
    writes ``recipe.output.dir`` and logs, the others work in a private scratch folder.

    Args:
        recipe: the recipe.
        progress: tqdm bars.
        log: where progress lines go.
        memory_check: estimate the run's memory from the model's config and fail before loading the model when it
            exceeds the free memory (:func:`steering_adapter.memory.check_recipe_memory`).

    Returns:
        The :class:`RunResult` (adapter folder, sweep, final report).

    Raises:
        NoFeasibleChoiceError: when no sweep point meets the constraints (the sweep table is still written).
        InsufficientMemoryError: when the estimate exceeds the free memory (nothing is loaded).
    """
    started = time.time()
    times = StageTimes()
    out = Path(recipe.output.dir)
    if not distributed.is_main():  # the same work on every process; only rank 0 writes the run's folder and logs
        out, progress, log = distributed.scratch_dir(), False, _quiet
    if memory_check:
        from .memory import check_recipe_memory

        check_recipe_memory(recipe, log=log)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.json", recipe.to_dict())
    with times("load model, judge, embedder"):
        model, tokenizer = load_model(recipe.model)
        judge = build_judge(recipe.judge, recipe.model)
        relevance = None
        if recipe.relevance:
            from .relevance import RelevanceScorer

            relevance = RelevanceScorer()

    sampler = build_sampler(recipe, model, tokenizer)
    try:
        return _run_stages(recipe, model, tokenizer, sampler, judge, relevance, out, started, times, progress, log)
    finally:
        close = getattr(sampler, "close", None)
        if close is not None:
            close()


def _run_stages(
    recipe: Recipe,
    model: torch.nn.Module,
    tokenizer: Any,
    sampler: Sampler,
    judge: Judge,
    relevance: Any,
    out: Path,
    started: float,
    times: StageTimes,
    progress: bool,
    log: Callable[[str], None],
) -> RunResult:
    directions, ranking, provenance = estimate_directions(
        model, tokenizer, recipe, judge, out, progress, log, times, sampler=sampler
    )
    with times("fit condition"):
        condition = fit_recipe_condition(model, tokenizer, recipe, progress, log)

    sel = recipe.selection
    kl_selection = resolve_prompts(recipe.prompts.neutral, "selection", recipe) if recipe.prompts.neutral else None
    objective = sel.objective()
    alphas = sel.alphas if sel.alphas is not None else list(default_alphas(sel.goal))
    log(
        f"[select] {len(sel.layer_counts)} layer counts × {len(alphas)} α on the selection half"
        + (f", then {sel.refine_steps} refinement steps" if sel.refine_steps else "")
    )
    selection_sets = _eval_sets(recipe, "selection", sel.max_prompts_per_set)
    gate_key = None
    if condition is not None:
        gate_key = (_tensor_digest({"condition": condition.direction}), condition.config_fields())
    with times("select layers and α"):
        sweep = sweep_layers_and_scale(
            sampler,
            tokenizer,
            directions,
            ranking,
            selection_sets,
            judge,
            stage_dir(
                out / "selection",
                _fingerprint(
                    _tensor_digest(directions),
                    ranking,
                    gate_key,
                    recipe.gating.mode,
                    dataclasses.asdict(sel),
                    [dataclasses.asdict(s) for s in selection_sets],
                    kl_selection,
                    _sampling(recipe),
                    judge.name,
                ),
                log,
            ),
            layer_counts=sel.layer_counts,
            alphas=alphas,
            refine_steps=sel.refine_steps,
            objective=objective,
            kl_prompts=kl_selection,
            kl_tokens=sel.kl_tokens,
            relevance=relevance,
            condition=condition,
            include_ungated=recipe.gating.mode != "on",
            batch_size=recipe.sampling.batch_size,
            progress=progress,
            **_sampling(recipe),
        )
    sweep = distributed.broadcast_object(sweep)  # every process evaluates rank 0's choice
    if sweep.choice is None:
        raise NoFeasibleChoiceError(
            f"no layer/α combination met the constraints; see {out / 'selection' / 'sweep.csv'} "
            "(relax selection.delta / kl_budget or widen alphas)"
        )
    choice = sweep.choice
    log(f"[select] chose layers {choice.layers}, α = {choice.alpha:g}" + (", gated" if choice.gated else ""))

    metadata = {
        **provenance,
        "title": recipe.name,
        "summary": recipe.description,
        "selection": sweep.metadata(),
        "library": "steering-adapter",
        "library_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": recipe.name,
        **{key: value for key, value in dataclasses.asdict(recipe.card).items() if value},
    }
    vectors = {layer: directions[layer] for layer in choice.layers}
    kl_test = resolve_prompts(recipe.prompts.neutral, "test", recipe) if recipe.prompts.neutral else None
    test_sets = _eval_sets(recipe, "test")
    evaluation_key = _fingerprint(
        _tensor_digest(vectors),
        choice.alpha,
        [dataclasses.asdict(s) for s in test_sets],
        kl_test,
        _sampling(recipe),
        judge.name,
        recipe.relevance,
    )
    evaluation_args = dict(
        kl_prompts=kl_test,
        kl_tokens=sel.kl_tokens,
        relevance=relevance,
        batch_size=recipe.sampling.batch_size,
        progress=progress,
    )
    ungated_report = None
    gate_fields: dict[str, Any] = {}
    if choice.gated:
        gate_fields = {"condition": condition.direction, **condition.config_fields()}
        metadata["condition"] = condition.metadata()
        # the same vectors, blocks and scale without the gate: what the gate saves the other prompt sets from
        log("[evaluate] the chosen vector without its gate, on the test half")
        sampler.add_adapter("ungated", vectors, scale=choice.alpha)
        sampler.activate("ungated")
        with times("evaluate ungated"):
            ungated_report = evaluate(
                sampler,
                tokenizer,
                test_sets,
                judge,
                stage_dir(out / "evaluation_ungated", evaluation_key, log),
                conditions=("steered",),
                plots=False,
                **evaluation_args,
                **_sampling(recipe),
            )
        sampler.remove_adapters()
    peft_model = adapter_from_vectors(
        model,
        vectors,
        scale=choice.alpha,
        steering_metadata=metadata,
        **gate_fields,
    )
    config = peft_model.peft_config["default"]
    if is_embedded(recipe.model.name_or_path):
        config.base_model_name_or_path = recipe.model.name_or_path
    config.revision = recipe.model.revision

    log("[evaluate] before/after on the test half")
    measured: torch.nn.Module | Sampler = peft_model
    if not isinstance(sampler, TransformersSampler):  # the same adapter in the sampling engine
        gate = {key: value for key, value in gate_fields.items() if key != "condition"}
        sampler.add_adapter("chosen", vectors, scale=choice.alpha, condition=gate_fields.get("condition"), **gate)
        sampler.activate("chosen")
        measured = sampler
    with times("evaluate"):
        report = evaluate(
            measured,
            tokenizer,
            test_sets,
            judge,
            stage_dir(out / "evaluation", _fingerprint(evaluation_key, gate_key if choice.gated else None), log),
            **evaluation_args,
            **_sampling(recipe),
        )
    markdown = adapter_report_markdown(report, ungated_report)
    adapter_dir = out / "adapter"
    save_adapter(peft_model, adapter_dir, evaluation={"markdown": markdown})
    summary = {
        "recipe": recipe.name,
        "adapter": str(adapter_dir),
        "layers": choice.layers,
        "alpha": choice.alpha,
        "gated": choice.gated,
        "report": report.to_dict(),
        "ungated_report": ungated_report.to_dict() if ungated_report is not None else None,
        "seconds": round(time.time() - started, 1),
        "stage_seconds": times.seconds,
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "timings.json", {"seconds": summary["seconds"], "stages": times.seconds})
    atomic_write_text(
        out / "report.md",
        f"# {recipe.name}\n\nlayers {choice.layers}, α = {choice.alpha:g}"
        + (", gated" if choice.gated else "")
        + "\n\n"
        + markdown,
    )
    peft_model.unload()
    return RunResult(out, adapter_dir, sweep, report, ungated_report)


def _quiet(message: str) -> None:
    """The log of processes other than rank 0."""


def _version() -> str:
    from . import __version__

    return __version__
