"""The model, sampling backend and judge a recipe names."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steering_adapter.measure.judges import (
    DEFAULT_REFUSAL_PATTERNS,
    Judge,
    LLMJudge,
    OpenAIChatBackend,
    PatternJudge,
    TransformersJudgeBackend,
)
from steering_adapter.measure.sampling.backend import Sampler, TransformersSampler
from steering_adapter.models.embedded import is_embedded, load_embedded
from steering_adapter.run.recipe import JudgeSpec, ModelSpec, Recipe
from steering_adapter.utils import distributed

__all__ = ["DEVICE_MAPS", "build_judge", "build_sampler", "load_model"]

# ModelSpec.device values that mean "dispatch the blocks over the visible devices" (transformers' device_map)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def load_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer a recipe names (an embedded model such as ``"organism"`` or ``"smollm2-censored"``
    is built locally, no download; see :mod:`steering_adapter.models.embedded`).

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
        from steering_adapter.runtimes.vllm.sampler import VllmSampler  # lazy: vllm is an optional dependency

        return VllmSampler.from_model_spec(recipe.model, **(recipe.sampling.engine_args or {}))
    return TransformersSampler(model, tokenizer)


def build_judge(spec: JudgeSpec, model: ModelSpec | None = None) -> Judge:
    """The judge a recipe names; a transformers judge is loaded in ``model``'s dtype on its device (default float32
    on CPU)."""
    if spec.kind != "pattern" and spec.ignore_prompt_echoes:
        raise ValueError("recipe.judge.ignore_prompt_echoes applies to kind: pattern only")
    if spec.kind == "pattern":
        return PatternJudge(
            refusal_patterns=(*DEFAULT_REFUSAL_PATTERNS, *spec.extra_refusal_patterns),
            ignore_prompt_echoes=spec.ignore_prompt_echoes,
        )
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
