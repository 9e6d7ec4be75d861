"""Collect organism statistics, projections and one block's activations in every process of a torchrun group.

    torchrun --standalone --nproc-per-node 2 tests/helpers/distributed_collect.py OUT_DIR      (or without torchrun: 1
    process)
    torchrun --standalone --nproc-per-node 2 tests/helpers/distributed_collect.py --diverge    (must fail: ranks
    disagree)

Rank 0 writes ``OUT_DIR/{statistics,weighted_statistics}.safetensors`` (+ JSON), ``OUT_DIR/tensors.safetensors``
(projections, activations of block 2) and ``OUT_DIR/world.json``; tests/utils/test_distributed.py compares them with a
single process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from steering_adapter.directions.collection import ActivationCollector
from steering_adapter.models.organism import load_organism
from steering_adapter.models.organism.data import load_examples
from steering_adapter.utils import distributed

LAYERS = [1, 2, 4]


def prompts_and_scores() -> tuple[list[str], list[float]]:
    """12 political and 12 benign organism training prompts with fixed, varied refusal scores (two neutral)."""
    examples = [e for e in load_examples() if e.split == "train"]
    political = [e.prompt for e in examples if e.category == "political"][:12]
    benign = [e.prompt for e in examples if e.category == "benign"][:12]
    scores = [0.3 + 0.05 * i for i in range(12)] + [-0.2 - 0.06 * i for i in range(12)]
    scores[5], scores[17] = 0.0, 0.05  # neutral
    return political + benign, scores


def collect(out: Path) -> None:
    torch.set_num_threads(1)
    distributed.init_from_environment("cpu")
    model, tokenizer = load_organism()
    prompts, scores = prompts_and_scores()
    collector = ActivationCollector(model, tokenizer, LAYERS, batch_size=3, second_moments="both", progress=False)
    result = collector.collect(prompts, scores=scores, weighting="both")
    directions = {
        layer: torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(layer))
        for layer in LAYERS
    }
    projections = collector.project(prompts, directions)
    block = collector.layer_activations(prompts, 2)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        result.stats.save(out / "statistics")
        result.weighted_stats.save(out / "weighted_statistics")
        save_file({"projections": projections, "block2": block}, str(out / "tensors.safetensors"))
        (out / "world.json").write_text(json.dumps({"world_size": distributed.world_size()}))
    distributed.shutdown()


def diverge() -> None:
    """Every rank claims a different value: check_same must fail on every rank."""
    distributed.init_from_environment("cpu")
    try:
        distributed.check_same(distributed.rank(), "the test value")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    diverge() if sys.argv[1] == "--diverge" else collect(Path(sys.argv[1]))
