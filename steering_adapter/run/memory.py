"""How much memory a recipe needs, estimated from the model's config before anything is loaded.

Per stage, in bytes (``P`` parameters, ``b`` bytes per weight — 4 for float32, 2 for bfloat16 / float16 —, ``ℓ``
decoder blocks, ``d`` hidden size, ``V`` vocabulary, ``h_kv · d_h`` key/value width, ``L`` candidate blocks):

============================  ===========================================================  ==========================
stage                         bytes                                                        where
============================  ===========================================================  ==========================
model weights                 ``P · b``                                                    model device(s), all along
sampling (per batch)          KV cache ``r · (t_p + t_new) · ℓ · 2 · h_kv·d_h · b`` and    model device
                              logits ``r · V · (b + 4)``, ``r = batch_size · k`` rows
activation statistics         ``8 · L · (2·d + k·d²)`` + one ``4 · d · ⌈d/8⌉`` scratch     each block's device
                              (``k``: 0 MD, 1 RMD / WRMD)
fitting one direction         ``≤ 4 · 8 · d²`` (covariance, ridge system, factor)          the block's device
diagnostics                   ``n · L · 8`` projections + ``n · d · 4`` one block (PCA)    host
condition (gating)            ``2 · n_g · L_g · d · 4`` kept activations (train, held-out)   host
KL base side (selection)      ``n_kl · kl_tokens · V · 4``, kept across the sweep          host
vLLM engine (``backend:       ``gpu_memory_utilization · GPU`` instead of the sampling      the GPU, all along
vllm``)                       batch, beside the transformers model
============================  ===========================================================  ==========================

The peak of a place is what stays there all along (the weights, where they live) plus its largest stage. ``t_p`` is
an assumed prompt length (256 tokens unless told). Under ``torchrun`` each process holds its own model and stages, so
a node needs the host estimate once per process on it (``LOCAL_WORLD_SIZE``); each GPU process needs the device
estimate on its own GPU. :func:`check_recipe_memory` compares the estimate with the free memory (``MemAvailable`` of
``/proc/meminfo``; ``torch.cuda.mem_get_info`` per GPU) and fails before the model is loaded, naming the estimate and
the recipe options that reduce it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from steering_adapter.adapter.hub_access import hub_errors_as_one_line, resolve_source
from steering_adapter.directions.moments import SECOND_MOMENT_MATRICES, scratch_nbytes, statistics_nbytes
from steering_adapter.models.embedded import embedded_config_dir, is_embedded
from steering_adapter.run.recipe import Recipe
from steering_adapter.run.stages.inputs import resolve_prompts
from steering_adapter.utils import distributed

__all__ = [
    "InsufficientMemoryError",
    "MemoryEstimate",
    "StageMemory",
    "check_recipe_memory",
    "estimate_recipe_memory",
    "free_memory",
    "model_config",
    "parameter_count",
]

HOST, DEVICE = "host", "device"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DEFAULT_PROMPT_TOKENS = 256


class InsufficientMemoryError(ValueError):
    """A recipe's memory estimate exceeds the free memory (raised before the model is loaded)."""


@dataclass
class StageMemory:
    """Memory of one stage.

    Attributes:
        stage: its name.
        where: ``"host"`` or ``"device"``.
        nbytes: bytes.
        resident: held for the whole run (the weights) rather than during the stage only.
        formula: how it was computed (with the numbers).
        reduce: recipe options that make it smaller.
    """

    stage: str
    where: str
    nbytes: int
    resident: bool = False
    formula: str = ""
    reduce: str = ""


@dataclass
class MemoryEstimate:
    """A recipe's memory, stage by stage (see the module docstring).

    Attributes:
        model: the model's name.
        stages: one :class:`StageMemory` per stage and place.
        processes: processes per node sharing the host memory (torchrun's ``LOCAL_WORLD_SIZE``).
        assumptions: numbers the estimate assumed (prompt length, prompt counts).
    """

    model: str
    stages: list[StageMemory] = field(default_factory=list)
    processes: int = 1
    assumptions: dict[str, Any] = field(default_factory=dict)

    def peak(self, where: str) -> int:
        """Peak bytes of one process at ``where``: what stays resident plus the largest stage."""
        here = [s for s in self.stages if s.where == where]
        resident = sum(s.nbytes for s in here if s.resident)
        return resident + max([s.nbytes for s in here if not s.resident], default=0)

    def table(self) -> str:
        """The estimate as a Markdown table."""
        lines = ["| stage | where | size | formula |", "|---|---|---|---|"]
        for s in self.stages:
            lines.append(f"| {s.stage} | {s.where} | {_size(s.nbytes)} | {s.formula} |")
        for where in (HOST, DEVICE):
            if any(s.where == where for s in self.stages):
                lines.append(
                    f"| **peak per process** | {where} | **{_size(self.peak(where))}** | resident + largest stage |"
                )
        return "\n".join(lines)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f}"


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _count(params: int) -> str:
    return f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.2f} M"


def model_config(name_or_path: str, revision: str | None = None, *, key: str = "recipe.model.name_or_path") -> Any:
    """The transformers config of a recipe's model (an embedded model's from its local folder) without weights.

    The name is checked as :func:`~steering_adapter.run.stages.load.load_model` checks it (errors in one line naming
    ``key``; a cached Hub config is read from the cache when the Hub cannot be reached).
    """
    if is_embedded(name_or_path):
        return AutoConfig.from_pretrained(embedded_config_dir(name_or_path), local_files_only=True)
    name, hub = resolve_source(name_or_path, key=key, revision=revision)
    with hub_errors_as_one_line(name_or_path, key):
        return AutoConfig.from_pretrained(name, revision=revision, **hub)


def parameter_count(config: Any) -> int:
    """Parameters of the causal LM ``config`` describes, counted on the ``meta`` device (nothing allocated)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _text(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def estimate_recipe_memory(
    recipe: Recipe,
    config: Any = None,
    *,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    prompt_counts: Mapping[str, int] | None = None,
    gpu_total: int | None = None,
) -> MemoryEstimate:
    """Estimate the memory of ``recipe`` per stage (see the module docstring for the formulas).

    With ``sampling.backend: vllm`` the sampling stage is the vLLM engine instead: it reserves
    ``gpu_memory_utilization`` (vLLM's default 0.9) of the GPU for the whole run, beside the transformers model that
    the activations need.

    Args:
        recipe: the recipe.
        config: the model's transformers config (default: read with :func:`model_config`).
        prompt_tokens: assumed prompt length in tokens, for the KV cache.
        prompt_counts: ``{"train", "gating", "neutral"}`` prompt counts (default: resolved from the recipe's sources;
            a source that cannot be read counts 0).
        gpu_total: bytes of one GPU, for the vLLM engine's share (default: this machine's first GPU, 0 without one).

    Returns:
        The :class:`MemoryEstimate`.
    """
    spec = recipe.model
    config = config if config is not None else model_config(spec.name_or_path, spec.revision)
    text = _text(config)
    d = int(getattr(text, "hidden_size", None) or text.n_embd)
    blocks = int(getattr(text, "num_hidden_layers", None) or text.n_layer)
    vocab = int(text.vocab_size)
    heads = int(getattr(text, "num_attention_heads", None) or getattr(text, "n_head", 1))
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or d // heads)
    b = DTYPE_BYTES[spec.dtype]
    on_cpu = spec.device == "cpu"
    model_place = HOST if on_cpu else DEVICE
    counts = dict(prompt_counts) if prompt_counts is not None else _prompt_counts(recipe)
    estimate = MemoryEstimate(
        model=spec.name_or_path,
        processes=distributed.local_world_size(),
        assumptions={"prompt_tokens": prompt_tokens, **counts},
    )
    add = estimate.stages.append

    params = parameter_count(config)
    add(
        StageMemory(
            "model weights",
            model_place,
            params * b,
            resident=True,
            formula=f"{_count(params)} params × {b} B ({spec.dtype})",
            reduce="model.dtype: bfloat16" if b == 4 else "model.device: auto (spread the blocks over several GPUs)",
        )
    )
    s = recipe.sampling
    rows = s.batch_size * s.k
    kv = rows * (prompt_tokens + s.max_new_tokens) * blocks * 2 * kv_heads * head_dim * b
    logits = rows * vocab * (b + 4)
    if s.backend == "vllm":
        share = float((s.engine_args or {}).get("gpu_memory_utilization", 0.9))
        if gpu_total is None:
            gpu_total = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
        add(
            StageMemory(
                "vLLM engine (sampling)",
                DEVICE,
                int(share * gpu_total),
                resident=True,
                formula=f"gpu_memory_utilization {share:g} × {_size(gpu_total)} GPU",
                reduce="sampling.engine_args.gpu_memory_utilization (the transformers model shares the GPU)",
            )
        )
    else:
        add(
            StageMemory(
                "sampling (one batch)",
                model_place,
                kv + logits,
                formula=f"KV {rows} rows × {prompt_tokens + s.max_new_tokens} tok × {blocks} × 2 × "
                f"{kv_heads * head_dim} × {b} B + logits {rows} × {vocab} × {b + 4} B",
                reduce="sampling.batch_size, sampling.k, sampling.max_new_tokens",
            )
        )
    est = recipe.estimator
    layers = len(set(est.layers)) if est.layers is not None else blocks
    moments = "none" if est.method == "md" else est.covariance
    k = SECOND_MOMENT_MATRICES[moments]
    add(
        StageMemory(
            "activation statistics",
            model_place,
            statistics_nbytes(layers, d, moments) + scratch_nbytes(d, moments),
            formula=f"8 × {layers} blocks × (2 × {d} + {k} × {d}²) + scratch",
            reduce=f"estimator.layers (each candidate block: {_gib(statistics_nbytes(1, d, moments))} GiB), "
            f"estimator.method: md (means only: {_gib(statistics_nbytes(layers, d, 'none'))} GiB)",
        )
    )
    if k:
        add(
            StageMemory(
                "fitting one direction",
                model_place,
                4 * 8 * d * d,
                formula=f"4 × 8 × {d}²",
                reduce="estimator.method: md",
            )
        )
    n_train = counts.get("train", 0)
    add(
        StageMemory(
            "diagnostics",
            HOST,
            n_train * layers * 8 + n_train * d * 4,
            formula=f"{n_train} prompts × ({layers} × 8 + {d} × 4) B",
            reduce="prompts.max_train_per_set",
        )
    )
    if recipe.gating.mode != "off":
        n_gate = counts.get("gating", 0)
        gate_layers = len(set(recipe.gating.layers)) if recipe.gating.layers is not None else max(1, blocks // 2)
        add(
            StageMemory(
                "condition (gating)",
                HOST,
                n_gate * gate_layers * d * 4,
                formula=f"{n_gate} prompts × {gate_layers} blocks × {d} × 4 B",
                reduce="gating.layers, prompts.max_train_per_set",
            )
        )
    if recipe.prompts.neutral and recipe.selection.kl_budget is not None:
        n_kl = counts.get("neutral", 0)
        kl_tokens = recipe.selection.kl_tokens or prompt_tokens
        add(
            StageMemory(
                "KL base side (selection)",
                HOST,
                n_kl * kl_tokens * vocab * 4,
                formula=f"{n_kl} prompts × {kl_tokens} positions × {vocab} × 4 B",
                reduce="selection.kl_tokens, prompts.max_eval_per_set",
            )
        )
    return estimate


def _prompt_counts(recipe: Recipe) -> dict[str, int]:
    def count(sources: list[str], part: str) -> int:
        total = 0
        for source in sources:
            try:
                total += len(resolve_prompts(source, part, recipe))
            except (OSError, ValueError):
                pass
        return total

    counts = {"train": count(recipe.prompts.refusal + recipe.prompts.compliance, "train")}
    if recipe.gating.mode != "off":
        sources = (recipe.gating.positive or recipe.prompts.refusal) + recipe.gating.negative
        counts["gating"] = count(sources, "train") + count(sources, "selection")
    if recipe.prompts.neutral:
        counts["neutral"] = count([recipe.prompts.neutral], "selection")
    return counts


def free_memory(device: str = "cpu") -> dict[str, int | None]:
    """Free bytes of the host (``MemAvailable``) and, for a CUDA device or device map, of this process's GPU(s).

    Returns:
        ``{"host": bytes or None, "device": bytes or None}`` (``None`` where it cannot be read).
    """
    host = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                host = int(line.split()[1]) * 1024
    except OSError:
        pass
    gpu = None
    if device != "cpu" and torch.cuda.is_available():
        local = distributed.local_device(device)
        if local.startswith("cuda"):
            index = torch.device(local).index
            gpu = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)[0]
        else:  # a device map spreads one model over every visible GPU
            gpu = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    return {HOST: host, DEVICE: gpu}


def check_recipe_memory(
    recipe: Recipe,
    *,
    config: Any = None,
    free: Mapping[str, int | None] | None = None,
    log: Callable[[str], None] = print,
    **estimate_kwargs: Any,
) -> MemoryEstimate | None:
    """Fail before loading the model when the recipe cannot fit in the free memory.

    Args:
        recipe: the recipe.
        config: the model's config (default: read with :func:`model_config`; when it cannot be read the check is
            skipped with a log line, and loading the model reports the problem).
        free: ``{"host": bytes, "device": bytes}`` to compare with (default: :func:`free_memory`; ``None`` values are
            not checked).
        log: where the one-line summary goes.
        **estimate_kwargs: passed to :func:`estimate_recipe_memory`.

    Returns:
        The estimate, or ``None`` when the config could not be read.

    Raises:
        InsufficientMemoryError: naming the estimate, the free memory and the options that reduce the largest parts.
    """
    if config is None:
        try:
            config = model_config(recipe.model.name_or_path, recipe.model.revision)
        except (OSError, ValueError) as exc:
            log(f"[memory] no config for {recipe.model.name_or_path!r} ({type(exc).__name__}); memory check skipped")
            return None
    estimate = estimate_recipe_memory(recipe, config, **estimate_kwargs)
    free = dict(free) if free is not None else free_memory(recipe.model.device)
    problems = []
    for where in (HOST, DEVICE):
        if not any(s.where == where for s in estimate.stages) or free.get(where) is None:
            continue
        need = estimate.peak(where) * (estimate.processes if where == HOST else 1)
        if need > free[where]:
            problems.append((where, need, free[where]))
    summary = ", ".join(
        f"{w} {_gib(estimate.peak(w))} GiB" for w in (HOST, DEVICE) if any(s.where == w for s in estimate.stages)
    )
    if not problems:
        log(f"[memory] estimated peak per process: {summary}")
        return estimate
    lines = [
        f"recipe {recipe.name!r} needs more memory than is free (estimated before loading "
        f"{recipe.model.name_or_path}):"
    ]
    for where, need, available in problems:
        processes = (
            f" for {estimate.processes} processes on this node" if where == HOST and estimate.processes > 1 else ""
        )
        lines.append(f"  {where}: about {_gib(need)} GiB needed{processes}, {_gib(available)} GiB free")
    lines.append("largest parts, and the recipe options that reduce them:")
    failing = {where for where, _, _ in problems}
    for s in sorted((s for s in estimate.stages if s.where in failing), key=lambda s: -s.nbytes)[:4]:
        if s.nbytes > 0:
            lines.append(f"  {s.stage} ({s.where}): {_gib(s.nbytes)} GiB = {s.formula}; reduce with {s.reduce}")
    lines.append("(steering-adapter memory RECIPE prints the whole estimate; run --no-memory-check skips this check)")
    raise InsufficientMemoryError("\n".join(lines))
