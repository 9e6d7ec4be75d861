"""What the stages of one run share, as typed values: the :class:`RunContext` every stage takes, and the
:class:`EstimatedDirections` the direction stage hands to the ones after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering_adapter.measure.judges.base import Judge
from steering_adapter.measure.relevance import RelevanceScorer
from steering_adapter.measure.sampling.backend import Sampler
from steering_adapter.run.recipe import Recipe
from steering_adapter.run.stages.stage_times import StageTimes

__all__ = ["EstimatedDirections", "RunContext"]


@dataclass
class RunContext:
    """One run's recipe, loaded model, sampling backend, judge, output folder and reporting.

    Attributes:
        recipe: the recipe being run.
        model: the base model (no adapters).
        tokenizer: its tokenizer.
        sampler: the sampling backend (the model itself wrapped, or vLLM).
        judge: the recipe's judge.
        out: the run's folder (rank 0's; a scratch folder on the other processes).
        relevance: the answer-relevance scorer, or ``None`` when the recipe turns relevance off.
        times: wall time per stage (written to ``timings.json``).
        progress: show tqdm bars.
        log: where progress lines go.
        started: ``time.time()`` when the run started.
    """

    recipe: Recipe
    model: nn.Module
    tokenizer: Any
    sampler: Sampler
    judge: Judge
    out: Path
    relevance: RelevanceScorer | None = None
    times: StageTimes = field(default_factory=StageTimes)
    progress: bool = True
    log: Callable[[str], None] = print
    started: float = 0.0


@dataclass
class EstimatedDirections:
    """The direction stage's result.

    Attributes:
        vectors: ``{block: [d] vector}`` for every candidate block.
        ranking: the blocks best first (|Pearson r| with c(x), then ROC AUC).
        provenance: how the vectors were made (method, λ, position, counts, datasets, judge, sampling, diagnostics),
            recorded in the adapter's metadata.
    """

    vectors: dict[int, torch.Tensor]
    ranking: list[int]
    provenance: dict[str, Any]
