"""A recipe's prompt sources, split into train / selection / test, and the sampling settings every stage shares."""

from __future__ import annotations

from typing import Any

from steering_adapter.measure.evaluation import EvalSet
from steering_adapter.measure.jailbreaks import parse_jailbreak_source, wrap_prompts
from steering_adapter.measure.prompt_sets import KNOWN_PROMPT_SETS, PromptSet, load_prompt_set, split_prompts
from steering_adapter.models.organism.data import load_examples
from steering_adapter.run.recipe import Recipe

__all__ = ["ORGANISM_PREFIX", "eval_sets", "load_source", "recipe_sampling", "resolve_prompts"]

ORGANISM_PREFIX = "organism:"


def resolve_prompts(
    source: str, part: str, recipe: Recipe, *, capped: bool = True, column_option: str = "recipe.prompts.column"
) -> list[str]:
    """Prompts of ``source`` for ``part`` (``"train"``, ``"selection"``, ``"test"`` or ``"all"``).

    ``organism:<category or topic>`` uses the organism's own train / held-out split; any other source (a known set
    name or a file) is split with ``recipe.prompts.held_out_fraction``. The held-out side is halved again into
    ``selection`` and ``test``; ``"all"`` is every prompt of the source (train first). ``capped=False`` ignores the
    recipe's ``max_train_per_set`` / ``max_eval_per_set``. ``recipe.prompts.column`` names the prompt column of user
    files (``column_option``: the key or option that set it, for the messages).

    ``jailbreak:[<families>:]<base>`` resolves ``<base>``'s prompts for ``part`` by these same rules (its caps count
    base prompts) and then wraps each in every family (:func:`~steering_adapter.measure.jailbreaks.wrap_prompts`),
    so the test half of a jailbreak set is its base set's test half, wrapped.
    """
    jailbreak = parse_jailbreak_source(source)
    if jailbreak is not None:
        try:
            base = resolve_prompts(jailbreak.base, part, recipe, capped=capped, column_option=column_option)
        except (FileNotFoundError, ValueError) as exc:
            raise _error_type(exc)(f"{source!r}: {exc}") from None
        return wrap_prompts(base, jailbreak.families).prompts
    spec = recipe.prompts
    train, held = load_source(
        source,
        held_out_fraction=spec.held_out_fraction,
        seed=spec.split_seed,
        language=spec.language,
        column=spec.column,
        column_option=column_option,
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
    source: str,
    *,
    held_out_fraction: float = 0.2,
    seed: int = 0,
    language: str | None = "en",
    column: str | None = None,
    column_option: str = "recipe.prompts.column",
) -> tuple[PromptSet, PromptSet]:
    """``(train, held_out)`` prompts of a source: ``organism:<category, topic or source>`` (the organism's own
    split), a known prompt-set name (``language`` filters deccp) or a user file (split deterministically; ``column``
    names the prompt column of CSV / JSON files and Hub datasets, set by ``column_option``); ``jailbreak:...`` is its
    base's ``(train, held_out)``, each wrapped (see :func:`resolve_prompts`)."""
    jailbreak = parse_jailbreak_source(source)
    if jailbreak is not None:
        try:
            parts = load_source(
                jailbreak.base,
                held_out_fraction=held_out_fraction,
                seed=seed,
                language=language,
                column=column,
                column_option=column_option,
            )
        except (FileNotFoundError, ValueError) as exc:
            raise _error_type(exc)(f"{source!r}: {exc}") from None
        return wrap_prompts(parts[0], jailbreak.families), wrap_prompts(parts[1], jailbreak.families)
    if source.rstrip(":") == ORGANISM_PREFIX.rstrip(":"):
        raise ValueError(
            f"{source!r} names no prompts: use organism:<category or topic>, e.g. organism:political (categories: "
            f"{', '.join(sorted({e.category for e in load_examples()}))})"
        )
    if source.startswith(ORGANISM_PREFIX):
        key = source[len(ORGANISM_PREFIX) :]
        examples = [e for e in load_examples() if key in (e.category, e.topic, e.source)]
        if not examples:
            raise ValueError(
                f"{source!r}: no organism prompts with category, topic or source {key!r} (categories: "
                f"{', '.join(sorted({e.category for e in load_examples()}))})"
            )
        return (
            PromptSet(source, [e.prompt for e in examples if e.split == "train"]),
            PromptSet(source, [e.prompt for e in examples if e.split == "heldout"]),
        )
    full = load_prompt_set(
        source,
        language=language if source.startswith("deccp") else None,
        column=None if source in KNOWN_PROMPT_SETS else column,
        column_option=column_option,
    )
    return split_prompts(full, held_out_fraction=held_out_fraction, seed=seed)


def _error_type(exc: Exception) -> type[Exception]:
    """``FileNotFoundError`` for a missing file, else ``ValueError`` (for re-raising a base source's error)."""
    return FileNotFoundError if isinstance(exc, FileNotFoundError) else ValueError


def eval_sets(recipe: Recipe, part: str, cap: int | None = None) -> list[EvalSet]:
    """The recipe's evaluation sets, ``part`` (``"selection"`` or ``"test"``) of each, at most ``cap`` prompts."""
    return [
        EvalSet(spec.name, resolve_prompts(spec.source, part, recipe)[:cap], spec.role)
        for spec in recipe.prompts.evaluation
    ]


def recipe_sampling(recipe: Recipe) -> dict[str, Any]:
    """The sampling settings (and system prompt) that key every answer record of a run."""
    s = recipe.sampling
    return {
        "k": s.k,
        "max_new_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "system_prompt": recipe.model.system_prompt,
    }
