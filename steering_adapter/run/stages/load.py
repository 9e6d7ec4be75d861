"""The model, sampling backend and judge a recipe names."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steering_adapter.adapter.hub_access import hub_errors_as_one_line, resolve_source
from steering_adapter.measure.judges import (
    DEFAULT_REFUSAL_PATTERNS,
    DegeneracyJudge,
    Judge,
    LLMJudge,
    OpenAIChatBackend,
    PatternJudge,
    TagProbabilityJudge,
    TransformersJudgeBackend,
    default_embedding_judge,
    default_probe_judge,
)
from steering_adapter.measure.sampling.backend import Sampler, TransformersSampler
from steering_adapter.models.embedded import is_embedded, load_embedded
from steering_adapter.run.recipe import JudgeSpec, ModelSpec, Recipe
from steering_adapter.runtimes.vllm import require_vllm
from steering_adapter.tuner.blocks import model_dimensions
from steering_adapter.utils import distributed

__all__ = ["DEVICE_MAPS", "build_judge", "build_sampler", "check_recipe_layers", "load_model"]

# ModelSpec.device values that mean "dispatch the blocks over the visible devices" (transformers' device_map)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def load_model(spec: ModelSpec, *, key: str = "recipe.model.name_or_path") -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer a recipe names (an embedded model such as ``"organism"`` or ``"smollm2-censored"``
    is built locally, no download; see :mod:`steering_adapter.models.embedded`).

    ``spec.device`` is a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``; under torchrun ``"cuda"`` is this
    process's ``cuda:LOCAL_RANK``) or a transformers ``device_map`` (``"auto"``, ``"balanced"``, ``"balanced_low_0"``,
    ``"sequential"``) that spreads the blocks over the visible GPUs (and CPU) of one process.

    The name is checked first (:func:`~steering_adapter.adapter.hub_access.resolve_source`): a missing folder, or a
    Hub id that is neither cached nor reachable, fails at once in one line naming ``key`` (the recipe key or option
    that named the model); a cached Hub model loads from the cache when the Hub cannot be reached.

    Raises:
        FileNotFoundError, ValueError: no such folder, no such Hub repo, a folder without the model's files.
        HubUnreachableError: a Hub id that is not cached while the Hub cannot be reached.
    """
    dtype = getattr(torch, spec.dtype)
    device = distributed.local_device(spec.device)
    if is_embedded(spec.name_or_path):
        model, tokenizer = load_embedded(spec.name_or_path, dtype=dtype)
        if device in DEVICE_MAPS:  # one small model: the first GPU when there is one
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device), tokenizer
    name, hub = resolve_source(spec.name_or_path, key=key, revision=spec.revision)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": spec.revision, **hub}
    if hub:  # transformers looks for an adapter config in the repo with adapter_kwargs only
        kwargs["adapter_kwargs"] = dict(hub)
    if device in DEVICE_MAPS:
        kwargs["device_map"] = device
    with hub_errors_as_one_line(spec.name_or_path, key):
        tokenizer = AutoTokenizer.from_pretrained(name, revision=spec.revision, **hub)
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if device not in DEVICE_MAPS:
        model = model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def build_sampler(recipe: Recipe, model: torch.nn.Module, tokenizer: Any) -> Sampler:
    """The backend that samples the judged answers: the loaded model, or a vLLM engine on the same model."""
    if recipe.sampling.backend == "vllm":
        require_vllm("recipe.sampling.backend: vllm")
        from steering_adapter.runtimes.vllm.sampler import VllmSampler  # lazy: the sampler imports vLLM

        return VllmSampler.from_model_spec(recipe.model, **(recipe.sampling.engine_args or {}))
    return TransformersSampler(model, tokenizer)


def build_judge(spec: JudgeSpec, model: ModelSpec | None = None) -> Judge:
    """The judge a recipe names; a transformers judge is loaded in ``model``'s dtype on its device (default float32
    on CPU)."""
    if spec.kind != "pattern" and spec.ignore_prompt_echoes:
        raise ValueError("recipe.judge.ignore_prompt_echoes applies to kind: pattern only")
    if spec.verdict != "generate" and spec.kind != "transformers":
        raise ValueError("recipe.judge.verdict applies to kind: transformers only")
    if spec.max_tokens is not None and (spec.kind not in ("openai", "transformers") or spec.max_tokens < 1):
        raise ValueError("recipe.judge.max_tokens: a positive budget, for the openai and transformers judges only")
    judge: Judge
    if spec.kind == "pattern":
        judge = PatternJudge(
            refusal_patterns=(*DEFAULT_REFUSAL_PATTERNS, *spec.extra_refusal_patterns),
            ignore_prompt_echoes=spec.ignore_prompt_echoes,
        )
    elif spec.kind == "embedding":
        return default_embedding_judge()  # its features include the degeneracy detector
    elif spec.kind == "probe":
        return default_probe_judge()  # float32 on CPU; degenerate answers are refusals
    elif spec.kind == "openai":
        backend = OpenAIChatBackend(
            base_url=spec.base_url,
            api_key_env=spec.api_key_env,
            model=spec.model,
            max_concurrency=spec.max_concurrency,
        )
        judge = LLMJudge(backend, max_tokens=spec.max_tokens)
    else:
        if spec.model is None:
            raise ValueError("recipe.judge.model: the transformers judge needs a model id or folder")
        placement = model or ModelSpec()
        judge_model, tokenizer = load_model(
            ModelSpec(name_or_path=spec.model, dtype=placement.dtype, device=placement.device),
            key="recipe.judge.model",
        )
        if spec.verdict == "tag_probability":
            judge = TagProbabilityJudge(judge_model, tokenizer)
        else:
            judge = LLMJudge(TransformersJudgeBackend(judge_model, tokenizer), max_tokens=spec.max_tokens)
    return DegeneracyJudge(judge) if spec.degeneracy else judge


def check_recipe_layers(recipe: Recipe, model: torch.nn.Module) -> None:
    """Check the recipe's block indices (``estimator.layers``, ``gating.layers``) against the loaded model's depth,
    before any prompt is scored.

    Raises:
        ValueError: ``recipe.gating.layers[2]: block 12 does not exist; organism has 6 blocks (valid: 0 to 5)``.
    """
    _, blocks = model_dimensions(model)
    if blocks is None:
        return
    named = {"recipe.estimator.layers": recipe.estimator.layers}
    if recipe.gating.mode != "off":
        named["recipe.gating.layers"] = recipe.gating.layers
    for key, layers in named.items():
        for index, layer in enumerate(layers or []):
            if not 0 <= layer < blocks:
                raise ValueError(
                    f"{key}[{index}]: block {layer} does not exist; {recipe.model.name_or_path} has {blocks} blocks "
                    f"(valid: 0 to {blocks - 1})"
                )
