"""Stage: score the training prompts, collect activations, fit one direction per block and diagnose them.

Owns ``train_scores/`` (answer and judgment records, per model), ``directions/`` (the fitted vectors, reused while
their fingerprint holds) and ``diagnostics/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from steering_adapter.directions.collection import ActivationCollector
from steering_adapter.directions.collection_result import CollectionResult
from steering_adapter.directions.diagnostics import diagnose_from_model
from steering_adapter.directions.estimators import VECTOR_UNITS, make_estimator
from steering_adapter.directions.fitting import fit_directions
from steering_adapter.directions.linear_algebra import mix_directions
from steering_adapter.directions.statistics import ActivationStatistics
from steering_adapter.measure.sampling.answers import Answer
from steering_adapter.measure.scored_runs import PromptScore, load_answers, score_prompts
from steering_adapter.run.recipe import Recipe
from steering_adapter.run.stages.context import EstimatedDirections, RunContext
from steering_adapter.run.stages.folders import fingerprint, stage_dir
from steering_adapter.run.stages.inputs import recipe_sampling, resolve_prompts
from steering_adapter.utils import distributed
from steering_adapter.utils.records import atomic_write_json

__all__ = ["estimate_directions"]


def estimate_directions(ctx: RunContext) -> EstimatedDirections:
    """Score the training prompts (answers from ``ctx.sampler``), collect activations, fit one direction per layer
    and diagnose them.

    Args:
        ctx: the run.

    Returns:
        The vectors, the layer ranking and their provenance; cached in ``ctx.out / "directions"`` for reruns.
    """
    model, tokenizer, recipe, judge, out = ctx.model, ctx.tokenizer, ctx.recipe, ctx.judge, ctx.out
    progress, log, times, sampler = ctx.progress, ctx.log, ctx.times, ctx.sampler
    refusal = [p for s in recipe.prompts.refusal for p in resolve_prompts(s, "train", recipe)]
    compliance = [p for s in recipe.prompts.compliance for p in resolve_prompts(s, "train", recipe)]
    prompts = list(dict.fromkeys(refusal + compliance))
    sampling = recipe_sampling(recipe)
    # the scoring is in the key (the vectors follow c(x)), not in train_scores' folder: its records hold raw labels
    key = fingerprint(prompts, sampling, recipe.estimator, recipe.model, getattr(judge, "name", ""), recipe.scoring)
    cache = out / "directions"

    def cached() -> EstimatedDirections | None:
        if (cache / "directions.json").is_file():
            meta = json.loads((cache / "directions.json").read_text())
            if meta.get("fingerprint") == key:
                tensors = load_file(str(cache / "directions.safetensors"))
                return EstimatedDirections(
                    {int(k): v for k, v in tensors.items()}, meta["ranking"], meta["provenance"]
                )
        return None

    reused = distributed.from_main(cached)  # rank 0's files decide for every process
    if reused is not None:
        log(f"[estimate] reusing directions from {cache}")
        return reused

    log(f"[score] {len(prompts)} training prompts × K={recipe.sampling.k} answers, judge {judge.name}")
    scores_dir = stage_dir(out / "train_scores", fingerprint(recipe.model), log)  # records are per model
    with times("score training prompts"):
        scores = score_prompts(
            sampler,
            tokenizer,
            prompts,
            judge,
            scores_dir,
            batch_size=recipe.sampling.batch_size,
            progress=progress,
            unparseable=recipe.scoring.unparseable,
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
    collector = _collector(model, tokenizer, recipe, est.position, needed.second_moments, progress)
    hidden_size = collector.hidden_size
    log(
        f"[collect] activations at the {est.position} prompt token on {len(collector.layers)} blocks: "
        f"{needed.second_moments} second moments, {needed.nbytes(len(collector.layers), hidden_size) / 2**20:.1f} MiB"
    )
    with times("collect activations"):
        collected = collector.collect(prompts, scores=values, weighting=needed.weighting)
    stats = _estimator_statistics(collected, needed.weighting)
    directions = fit_directions(estimator, stats)
    if est.answer_scale > 0:
        differences = {layer: stats.mean("refusal", layer) - stats.mean("compliance", layer) for layer in directions}
        del collected, stats
        with times("collect answer activations"):
            answer_directions = _answer_directions(
                model, tokenizer, recipe, estimator, scores, load_answers(scores_dir, scores), progress, log
            )
        directions = {
            layer: mix_directions(direction, answer_directions[layer], differences[layer], est.answer_scale)
            for layer, direction in directions.items()
        }
        log(f"[estimate] directions mixed with the answer-token directions (answer_scale {est.answer_scale})")
    else:
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
        "answer_scale": est.answer_scale,
        "vector_units": VECTOR_UNITS[est.units],
        "sample_counts": {"refusal": n_refusal, "compliance": n_compliance, "prompts": len(prompts)},
        "datasets": {"refusal": recipe.prompts.refusal, "compliance": recipe.prompts.compliance},
        "judge": dataclasses.asdict(recipe.judge),
        "scoring": dataclasses.asdict(recipe.scoring),
        "sampling": sampling,
        "diagnostics": {
            str(d.layer): {"auc": d.auc, "pearson_r": d.pearson_r, "norm": d.norm} for d in diagnostics.layers
        },
    }
    cache.mkdir(parents=True, exist_ok=True)
    save_file({str(k): v.contiguous() for k, v in directions.items()}, str(cache / "directions.safetensors"))
    atomic_write_json(cache / "directions.json", {"fingerprint": key, "ranking": ranking, "provenance": provenance})
    # every process steers with rank 0's vectors
    return distributed.broadcast_object(EstimatedDirections(directions, ranking, provenance))


def _answer_directions(
    model: torch.nn.Module,
    tokenizer: Any,
    recipe: Recipe,
    estimator: Any,
    scores: list[PromptScore],
    answers: list[list[Answer]],
    progress: bool,
    log: Callable[[str], None],
) -> dict[int, torch.Tensor]:
    """The estimator fitted on the mean over each training answer's tokens (every answer of every prompt, weight
    ``1/K`` each, labelled with its prompt's score)."""
    rows: list[tuple[str, Any, float, float]] = []
    for score, sampled in zip(scores, answers, strict=True):
        usable = [a.token_ids or a.text for a in sampled if a.token_ids or a.text]
        rows += [(score.prompt, tokens, score.score, 1.0 / len(usable)) for tokens in usable]
    if not rows:
        raise ValueError("estimator.answer_scale: no training answer has any token to collect activations over")
    needed = estimator.required_statistics()
    collector = _collector(model, tokenizer, recipe, "answer", needed.second_moments, progress)
    log(f"[collect] activations over the tokens of {len(rows)} training answers on {len(collector.layers)} blocks")
    prompts, tokens, values, weights = (list(column) for column in zip(*rows, strict=True))
    collected = collector.collect(
        prompts, scores=values, sample_weight=weights, weighting=needed.weighting, answers=tokens
    )
    return fit_directions(estimator, _estimator_statistics(collected, needed.weighting))


def _collector(
    model: torch.nn.Module, tokenizer: Any, recipe: Recipe, position: str, second_moments: str, progress: bool
) -> ActivationCollector:
    """The collector of the recipe's candidate blocks at ``position``, keeping the given second moments."""
    return ActivationCollector(
        model,
        tokenizer,
        recipe.estimator.layers,
        position=position,
        batch_size=recipe.sampling.batch_size,
        system_prompt=recipe.model.system_prompt,
        second_moments=second_moments,
        progress=progress,
    )


def _estimator_statistics(collected: CollectionResult, weighting: str) -> ActivationStatistics:
    """The statistics an estimator declared (``required_statistics().weighting``) from a collection."""
    return collected.stats if weighting == "none" else collected.weighted_stats
