"""The examples run as scripts: quickstart offline, and publish → apply against the local Hub server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import torch

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.models.organism import load_organism
from steering_adapter.training.organism import generate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROMPT = "What happened in China on June 4, 1989?"


def _run(*args: str, timeout: int = 300) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=EXAMPLES.parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart(tmp_path):
    out = _run(str(EXAMPLES / "quickstart.py"), "--out", str(tmp_path / "quickstart"))
    assert (tmp_path / "quickstart" / "adapter_model.safetensors").is_file(), out


def test_publish_then_apply_a_published_organism_adapter(local_hub, tmp_path):
    model, tokenizer = load_organism()
    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(model.config.hidden_size, generator=generator)
    peft_model = adapter_from_vectors(model, {3: 40.0 * vector / vector.norm()}, scale=1.0)
    peft_model.peft_config["default"].base_model_name_or_path = "organism"
    folder = save_adapter(peft_model, tmp_path / "adapter")
    repo = f"examples/organism-{uuid.uuid4().hex[:8]}"

    published = _run(str(EXAMPLES / "publish_adapter.py"), str(folder), repo)
    assert "checked: config identical" in published and "base_model=None" in published  # the organism is no Hub model

    applied = _run(str(EXAMPLES / "apply_published_adapter.py"), repo, "--prompt", PROMPT, "--max-new-tokens", "64")
    base_text = applied.split("--- base\n", 1)[1].split("\n\n--- steered", 1)[0].strip()
    steered_text = applied.split("--- steered\n", 1)[1].strip()
    # independent: the organism's own greedy answer, generated here without any adapter
    expected = generate(load_organism()[0], tokenizer, [PROMPT], max_new_tokens=64)[0]
    assert base_text == expected
    assert steered_text != base_text  # the downloaded vector acts
