"""Stage: the gate's condition (direction, block, threshold) for gated steering."""

from __future__ import annotations

from steering_adapter.directions.conditions import ConditionFit, fit_condition
from steering_adapter.run.stages.context import RunContext
from steering_adapter.run.stages.inputs import resolve_prompts
from steering_adapter.utils import distributed

__all__ = ["fit_recipe_condition"]


def fit_recipe_condition(ctx: RunContext) -> ConditionFit | None:
    """The recipe's condition for gated steering (``None`` when ``gating.mode`` is ``"off"``).

    Directions come from the training prompts; block and threshold from the selection half of the held-out prompts.
    """
    model, tokenizer, recipe, progress, log = ctx.model, ctx.tokenizer, ctx.recipe, ctx.progress, ctx.log
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
