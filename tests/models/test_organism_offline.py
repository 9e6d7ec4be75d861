"""The embedded organism resolves as a base model offline in every flow the README lists.

An adapter computed on the organism records ``base_model_name_or_path: "steering-adapter:organism"``. In a fresh
process whose Hub endpoint is a socket that only counts connections (so any Hub lookup would be seen, and would fail
or retry), every flow loads the organism from the package and steers exactly like the hook reference.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.models.organism import ORGANISM_ID, load_organism

HELPERS = Path(__file__).resolve().parents[1] / "helpers"

SCRIPT = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[2])
from reference import contract_hooks
import steering_adapter
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM
from steering_adapter.models.organism import load_organism

adapter, vectors = sys.argv[1], {int(k): torch.tensor(v) for k, v in json.loads(sys.argv[3]).items()}
ids = torch.tensor([[3, 17, 42, 9, 33, 70, 5]])
base, _ = load_organism()
with torch.no_grad(), contract_hooks(base, "model.layers", [{"vectors": vectors, "scale": -2.0}]):
    expected = base(ids).logits

def transformers_load_adapter():
    model, _ = load_organism()
    model.load_adapter(adapter)
    return model

flows = {
    "AutoModelForCausalLM.from_pretrained(adapter)": lambda: AutoModelForCausalLM.from_pretrained(adapter),
    "AutoPeftModelForCausalLM.from_pretrained(adapter)": lambda: AutoPeftModelForCausalLM.from_pretrained(adapter),
    "PeftModel.from_pretrained(organism, adapter)": lambda: PeftModel.from_pretrained(load_organism()[0], adapter),
    "model.load_adapter(adapter)": transformers_load_adapter,
}
for name, load in flows.items():
    model = load().eval()
    with torch.no_grad():
        got = model(ids).logits
    print(name, float((got - expected).abs().max()))
"""


class ConnectionCounter:
    """A TCP listener standing in for the Hub: it accepts, counts and closes every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.count = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while self.running:
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.count += 1
            connection.close()

    def __enter__(self) -> ConnectionCounter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def organism_adapter(tmp_path_factory):
    model, _ = load_organism()
    generator = torch.Generator().manual_seed(0)
    vectors = {layer: torch.randn(model.config.hidden_size, generator=generator) for layer in (1, 3)}
    peft_model = adapter_from_vectors(model, vectors, scale=-2.0)
    peft_model.peft_config["default"].base_model_name_or_path = "organism"  # what the recipe runner records
    folder = save_adapter(peft_model, tmp_path_factory.mktemp("organism") / "adapter")
    return folder, vectors


def test_organism_adapter_records_its_id(organism_adapter):
    folder, _ = organism_adapter
    assert json.loads((Path(folder) / "adapter_config.json").read_text())["base_model_name_or_path"] == ORGANISM_ID


def test_every_flow_resolves_the_organism_offline(organism_adapter):
    folder, vectors = organism_adapter
    payload = json.dumps({layer: vector.tolist() for layer, vector in vectors.items()})
    with ConnectionCounter() as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_ETAG_TIMEOUT": "30",
            "OMP_NUM_THREADS": "1",
        }
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, folder, str(HELPERS), payload],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 4, result.stdout
    for line in lines:
        name, difference = line.rsplit(" ", 1)
        assert float(difference) < 1e-4, line
    assert hub.count == 0, f"{hub.count} connection(s) to the Hub endpoint"
    assert elapsed < 120, f"took {elapsed:.0f} s"
