"""Stage: the chosen adapter built, evaluated on the test half (and, when gated, without its gate) and saved.

Owns ``evaluation/`` and ``evaluation_ungated/`` (records, report JSON/Markdown, plots), ``adapter/`` (the adapter
and its model card), ``summary.json`` and ``report.md`` (``timings.json`` is the runner's).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from steering_adapter.adapter.builder import adapter_from_vectors, save_adapter
from steering_adapter.directions.conditions import ConditionFit
from steering_adapter.measure.comparison import benchmarks_markdown, comparison_markdown
from steering_adapter.measure.evaluation import evaluate, gate_closed_prompts
from steering_adapter.measure.evaluation_report import EvaluationReport, adapter_report_markdown
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judge_agreement import judge_agreement_summary
from steering_adapter.measure.sampling.backend import Sampler, TransformersSampler
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.models.embedded import is_embedded
from steering_adapter.run.selection.objective import SweepResult
from steering_adapter.run.stages.benchmark import benchmark_choice
from steering_adapter.run.stages.context import EstimatedDirections, RunContext
from steering_adapter.run.stages.folders import fingerprint, gate_key, stage_dir, tensor_digest
from steering_adapter.run.stages.inputs import eval_sets, recipe_sampling, resolve_prompts
from steering_adapter.utils.records import atomic_write_json, atomic_write_text
from steering_adapter.utils.versions import __version__

__all__ = ["evaluate_and_save"]


def evaluate_and_save(
    ctx: RunContext, estimated: EstimatedDirections, condition: ConditionFit | None, sweep: SweepResult
) -> tuple[Path, EvaluationReport, EvaluationReport | None]:
    """Evaluate the sweep's choice on the test half, write the adapter, its card and the run's summary.

    Args:
        ctx: the run.
        estimated: the direction stage's vectors and their provenance.
        condition: the fitted gate, or ``None``.
        sweep: the sweep, its ``choice`` set.

    Returns:
        ``(adapter folder, report, ungated report or None)``.
    """
    recipe, model, tokenizer, sampler, judge = ctx.recipe, ctx.model, ctx.tokenizer, ctx.sampler, ctx.judge
    relevance, out, started, times, progress, log = (
        ctx.relevance,
        ctx.out,
        ctx.started,
        ctx.times,
        ctx.progress,
        ctx.log,
    )
    directions, provenance = estimated.vectors, estimated.provenance
    sel = recipe.selection
    choice = sweep.choice
    metadata = {
        **provenance,
        "title": recipe.name,
        "summary": recipe.description,
        "selection": sweep.metadata(),
        "library": "steering-adapter",
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": recipe.name,
        **{key: value for key, value in dataclasses.asdict(recipe.card).items() if value},
    }
    vectors = {layer: directions[layer] for layer in choice.layers}
    kl_test = resolve_prompts(recipe.prompts.neutral, "test", recipe) if recipe.prompts.neutral else None
    test_sets = eval_sets(recipe, "test")
    evaluation_key = fingerprint(
        tensor_digest(vectors),
        choice.alpha,
        [dataclasses.asdict(s) for s in test_sets],
        kl_test,
        recipe_sampling(recipe),
        judge.name,
        recipe.relevance,
    )
    evaluation = EvaluationSettings(
        kl_prompts=kl_test,
        kl_tokens=sel.kl_tokens,
        relevance=relevance,
        batch_size=recipe.sampling.batch_size,
        progress=progress,
        judge_agreement=judge_agreement_summary(judge) if recipe.judge.measures_agreement() else None,
        unparseable=recipe.scoring.unparseable,  # not in the fingerprint: evaluate rescores the kept records
    )
    sampling = SamplingSettings.from_kwargs(**recipe_sampling(recipe))
    ungated_report, ungated_dir = None, None
    gate_fields: dict[str, Any] = {}
    if choice.gated:
        gate_fields = {"condition": condition.direction, **condition.config_fields()}
        metadata["condition"] = condition.metadata()
        # the same vectors, blocks and scale without the gate: what the gate saves the other prompt sets from
        log("[evaluate] the chosen vector without its gate, on the test half")
        sampler.add_adapter("ungated", vectors, scale=choice.alpha)
        sampler.activate("ungated")
        ungated_dir = stage_dir(out / "evaluation_ungated", evaluation_key, log)
        with times("evaluate ungated"):
            ungated_report = evaluate(
                sampler,
                tokenizer,
                test_sets,
                judge,
                ungated_dir,
                settings=dataclasses.replace(evaluation, plots=False),
                sampling=sampling,
                conditions=("steered",),
            )
        sampler.remove_adapters()
    # before the adapter is attached to the model: lm-eval scores the base model, then each variant on its own
    benchmarks = benchmark_choice(ctx, vectors, choice.alpha, condition if choice.gated else None)
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
    measured_name = "default"
    if not isinstance(sampler, TransformersSampler):  # the same adapter in the sampling engine
        gate = {key: value for key, value in gate_fields.items() if key != "condition"}
        sampler.add_adapter("chosen", vectors, scale=choice.alpha, condition=gate_fields.get("condition"), **gate)
        sampler.activate("chosen")
        measured, measured_name = sampler, "chosen"
    evaluation_dir = stage_dir(
        out / "evaluation", fingerprint(evaluation_key, gate_key(condition) if choice.gated else None), log
    )
    with times("evaluate"):
        reuse: dict[str, Any] = {}
        if ungated_dir is not None:
            # an open gate steers as the ungated adapter just did, a closed one leaves the base model: the gated
            # answers are the ungated evaluation's and this evaluation's base ones (same chunks, same seeds)
            closed = gate_closed_prompts(
                measured, tokenizer, measured_name, test_sets, batch_size=evaluation.batch_size, sampling=sampling
            )
            if closed:
                reuse = {"gate_closed": closed, "base_run": evaluation_dir, "ungated_run": ungated_dir}
        report = evaluate(
            measured,
            tokenizer,
            test_sets,
            judge,
            evaluation_dir,
            settings=evaluation,
            sampling=sampling,
            **reuse,
        )
    markdown = adapter_report_markdown(report, ungated_report)
    if benchmarks:
        markdown += "\n" + benchmarks_markdown(benchmarks)
    adapter_dir = out / "adapter"
    comparison = comparison_markdown(report, ungated_report, benchmarks)
    save_adapter(peft_model, adapter_dir, evaluation={"markdown": markdown, "comparison": comparison})
    summary = {
        "recipe": recipe.name,
        "adapter": str(adapter_dir),
        "layers": choice.layers,
        "alpha": choice.alpha,
        "gated": choice.gated,
        "report": report.to_dict(),
        "ungated_report": ungated_report.to_dict() if ungated_report is not None else None,
        "benchmarks": benchmarks,
        "seconds": round(time.time() - started, 1),
        "stage_seconds": times.seconds,
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(
        out / "report.md",
        f"# {recipe.name}\n\nlayers {choice.layers}, α = {choice.alpha:g}"
        + (", gated" if choice.gated else "")
        + "\n\n"
        + markdown,
    )
    peft_model.unload()
    return adapter_dir, report, ungated_report
