"""The recipe runner: sample → judge → score → collect → estimate → select → evaluate → save.

Each stage lives in :mod:`steering_adapter.run.stages` and owns its inputs, outputs and cache folder; every long stage
is resumable (JSONL records, atomic JSON), so a killed run continues where it stopped when the same command is run
again.
The held-out part of every evaluation set is split once more: one half chooses the layers and α (selection), the other
half gives the final before/after report (test), so the reported numbers are not the ones the choice was tuned on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from steering_adapter.measure.benchmarks.harness import check_benchmark_inputs
from steering_adapter.measure.evaluation_report import EvaluationReport
from steering_adapter.measure.relevance import RelevanceScorer
from steering_adapter.measure.sampling.prompt_encoding import padding_id, stop_token_ids
from steering_adapter.run.memory import check_recipe_memory
from steering_adapter.run.recipe import Recipe
from steering_adapter.run.selection.objective import SweepResult
from steering_adapter.run.stages.choose import NoFeasibleChoiceError, select_layers_and_alpha
from steering_adapter.run.stages.context import RunContext
from steering_adapter.run.stages.estimate import estimate_directions
from steering_adapter.run.stages.gate_fit import fit_recipe_condition
from steering_adapter.run.stages.load import build_judge, build_sampler, check_recipe_layers, load_model
from steering_adapter.run.stages.publish import evaluate_and_save
from steering_adapter.run.stages.stage_times import StageTimes
from steering_adapter.utils import distributed
from steering_adapter.utils.paths import check_output_dir
from steering_adapter.utils.records import atomic_write_json
from steering_adapter.utils.threads import THREADS_ENV

__all__ = ["NoFeasibleChoiceError", "RunResult", "run_recipe"]


@dataclass
class RunResult:
    """What :func:`run_recipe` produced."""

    out_dir: Path
    adapter_dir: Path | None
    selection: SweepResult
    report: EvaluationReport | None
    ungated_report: EvaluationReport | None = None


def run_recipe(
    recipe: Recipe, *, progress: bool = True, log: Callable[[str], None] = print, memory_check: bool = True
) -> RunResult:
    """Run a recipe end to end; see the module docstring.

    Under ``torchrun`` every process runs this with the same recipe (see :mod:`steering_adapter.utils.distributed`):
    rank 0
    writes ``recipe.output.dir`` and logs, the others work in a private scratch folder.

    Args:
        recipe: the recipe.
        progress: tqdm bars.
        log: where progress lines go.
        memory_check: estimate the run's memory from the model's config and fail before loading the model when it
            exceeds the free memory (:func:`steering_adapter.run.memory.check_recipe_memory`).

    Returns:
        The :class:`RunResult` (adapter folder, sweep, final report).

    Raises:
        NoFeasibleChoiceError: when no sweep point meets the constraints (the sweep table is still written).
        InsufficientMemoryError: when the estimate exceeds the free memory (nothing is loaded).
        ValueError: ``recipe.output.dir`` cannot be a folder (checked first); a block index of ``estimator.layers`` /
            ``gating.layers`` that the model does not have (checked once it is loaded, before any scoring).
    """
    started = time.time()
    times = StageTimes()
    out = Path(recipe.output.dir)
    if not distributed.is_main():  # the same work on every process; only rank 0 writes the run's folder and logs
        out, progress, log = distributed.scratch_dir(), False, _quiet
    check_output_dir(out, "recipe.output.dir")
    log(f"[threads] torch uses {torch.get_num_threads()} intra-op threads (--threads / ${THREADS_ENV} to change)")
    check_benchmark_inputs(recipe.benchmarks.tasks, "recipe.benchmarks.tasks")  # lm-eval and MMLU, before loading
    if memory_check:
        check_recipe_memory(recipe, log=log)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.json", recipe.to_dict())
    with times("load model, judge, embedder"):
        model, tokenizer = load_model(recipe.model)
        check_recipe_layers(recipe, model)  # before any prompt is scored
        times.watch(model, padding_id(tokenizer, stop_token_ids(model, tokenizer)))
        judge = build_judge(recipe.judge, recipe.model)
        relevance = None
        if recipe.relevance:
            relevance = RelevanceScorer()

    sampler = build_sampler(recipe, model, tokenizer)
    ctx = RunContext(recipe, model, tokenizer, sampler, judge, out, relevance, times, progress, log, started)
    try:
        estimated = estimate_directions(ctx)
        with times("fit condition"):
            condition = fit_recipe_condition(ctx)
        sweep = select_layers_and_alpha(ctx, estimated, condition)
        adapter_dir, report, ungated = evaluate_and_save(ctx, estimated, condition, sweep)
        _write_timings(out, started, times)
        return RunResult(out, adapter_dir, sweep, report, ungated)
    except BaseException as error:  # a failed or interrupted run still records where its time went
        _write_timings(out, started, times, error)
        raise
    finally:
        close = getattr(sampler, "close", None)
        if close is not None:
            close()


def _write_timings(out: Path, started: float, times: StageTimes, error: BaseException | None = None) -> None:
    """``timings.json``: wall seconds, seconds per stage, torch's intra-op threads, whether the run completed (and
    why not)."""
    data: dict[str, object] = {
        "seconds": round(time.time() - started, 1),
        "stages": times.seconds,
        "tokens": times.tokens,
        "torch_threads": torch.get_num_threads(),
        "completed": error is None,
    }
    if error is not None:
        data["error"] = f"{type(error).__name__}: {error}"[:500]
    atomic_write_json(out / "timings.json", data)


def _quiet(message: str) -> None:
    """The log of processes other than rank 0."""
