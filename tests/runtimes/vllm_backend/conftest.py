"""Fixtures of the vLLM tests (run in .venv-vllm: `.venv-vllm/bin/python -m pytest tests/runtimes/vllm_backend`).

One vLLM engine on the organism serves every offline test of the session (an engine start costs ~40 s on 2 cores);
adapters are switched on it between tests. vLLM's KV cache is kept at 1 GiB (the machine is shared).
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import contextlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from steering_adapter.models.organism import ORGANISM_DIR, load_organism  # noqa: E402
from steering_adapter.models.organism.data import load_examples  # noqa: E402

HIDDEN = 256
ADD_LAYERS = (2, 3)
ABLATE_LAYER = 4
COND_LAYER = 1
MAX_SEQS = 8


def heldout_prompts(n: int) -> list[str]:
    """``n`` held-out organism prompts spread over the categories (deterministic)."""
    examples = [e for e in load_examples() if e.split == "heldout"]
    step = max(1, len(examples) // n)
    return [e.prompt for e in examples[::step]][:n]


def free_port() -> int:
    """A local TCP port nothing listens on yet."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def vllm_server(
    arguments: Sequence[str], log: Path, startup_s: float = 300.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``python -m <arguments>`` (an OpenAI-compatible vLLM server on a free port, passed as ``--port``), wait
    for its ``/health`` and yield its URL; the server is stopped on exit. A server that exits or does not come up in
    ``startup_s`` fails the test with the end of its log. ``env`` adds to the server's environment."""
    port = free_port()
    command = [sys.executable, "-m", *arguments, "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vllm serve did not come up in {startup_s:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def organism():
    """The organism as a transformers model (float32) and its tokenizer: the reference runtime."""
    torch.set_num_threads(1)
    return load_organism()


@pytest.fixture(scope="session")
def vectors(organism) -> dict[str, dict[int, torch.Tensor]]:
    """Steering vectors that change the organism's greedy answers: random directions to add; to ablate, the mean
    block output over a few prompts (a random direction holds too little of the hidden states to matter)."""
    from reference import block_output

    model, tokenizer = organism
    generator = torch.Generator().manual_seed(0)
    ids = tokenizer(heldout_prompts(4), return_tensors="pt", padding=True)["input_ids"]
    means = {layer: block_output(model, layer, ids).mean((0, 1)) for layer in (3, ABLATE_LAYER)}
    return {
        "add": {layer: torch.randn(HIDDEN, generator=generator) * 3.0 for layer in ADD_LAYERS},
        "ablate": means,
        "condition": {COND_LAYER: torch.randn(HIDDEN, generator=generator)},
    }


@pytest.fixture(scope="session")
def engine(adapter_dirs) -> Iterator:
    """One vLLM engine on the organism (float32, vLLM's compiled mode with the steering slots, gated adapters
    allowed) for the whole session, on which requests may select the adapters ``req-add`` and ``req-ablate``. At
    most 8 requests run at once, so in every batch of more prompts requests arrive while others decode."""
    from steering_adapter.runtimes.vllm import VllmSampler

    request_adapters = [
        {"name": "req-add", "path": str(adapter_dirs["add"])},
        {"name": "req-ablate", "path": str(adapter_dirs["ablate"])},
    ]
    sampler = VllmSampler(
        str(ORGANISM_DIR),
        dtype="float32",
        max_model_len=256,
        max_num_seqs=MAX_SEQS,
        seed=0,
        request_adapters=request_adapters,
    )
    yield sampler
    sampler.close()


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory, organism, vectors) -> dict[str, Path]:
    """Adapter folders saved through the PEFT flow (adapter_from_vectors + save_adapter) on the organism."""
    from steering_adapter import adapter_from_vectors, save_adapter

    model, _ = organism
    root = tmp_path_factory.mktemp("adapters")
    folders = {}
    specs = {
        "add": dict(vectors=vectors["add"], scale=1.5, layer_scales={"3": -0.5}),
        "ablate": dict(vectors=vectors["ablate"], mode="ablate"),
    }
    for name, spec in specs.items():
        peft_model = adapter_from_vectors(model, spec.pop("vectors"), **spec)
        save_adapter(peft_model, root / name)
        peft_model.unload()
        folders[name] = root / name
    return folders
