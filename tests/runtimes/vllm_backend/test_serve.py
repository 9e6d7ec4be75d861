"""``vllm serve`` with a steering adapter answers steered through the OpenAI-compatible API (real HTTP over
loopback), launched the documented way (python -m steering_adapter.runtimes.vllm.serve); concurrent requests select
their
own adapter with ``vllm_xargs``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import heldout_prompts
from test_steering import ADD, reference

from steering_adapter.models.organism import ORGANISM_DIR

MAX_TOKENS = 48


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(adapter_dirs, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        sys.executable,
        "-m",
        "steering_adapter.runtimes.vllm.serve",
        str(ORGANISM_DIR),
        "--adapter",
        str(adapter_dirs["add"]),
    ]
    command += ["--", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "256"]
    command += ["--served-model-name", "organism"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
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
                pytest.fail(f"vllm serve did not come up in 300 s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _chat(server: str, prompt: str, xargs: dict | None = None) -> str:
    body = {
        "model": "organism",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
    }
    if xargs is not None:
        body["vllm_xargs"] = xargs  # the OpenAI client sends it as extra_body={"vllm_xargs": {...}}
    return _post(f"{server}/v1/chat/completions", body)["choices"][0]["message"]["content"].strip()


def test_served_answers_are_steered_per_request(server, organism, vectors):
    prompts = heldout_prompts(6)
    settings = dict(k=1, temperature=0.0, max_new_tokens=MAX_TOKENS)
    add = [{"vectors": vectors["add"], **ADD}]
    steered = reference(organism, prompts, add, **settings)
    both = reference(organism, prompts, [*add, {"vectors": vectors["ablate"], "mode": "ablate"}], **settings)
    plain = reference(organism, prompts, [], **settings)
    jobs = [(p, None) for p in prompts] + [(p, {"steering_adapter": "req-ablate"}) for p in prompts]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:  # concurrent: the requests share engine steps
        served = list(pool.map(lambda job: _chat(server, *job), jobs))
    expected = [s.answers[0].text for s in steered] + [s.answers[0].text for s in both]
    assert served == expected
    assert sum(a != p.answers[0].text for a, p in zip(served, plain, strict=False)) >= 2
    assert sum(s.answers[0].text != b.answers[0].text for s, b in zip(steered, both, strict=True)) >= 1


def test_undeclared_request_adapter_is_a_400(server):
    with pytest.raises(urllib.error.HTTPError) as error:
        _chat(server, "hello", {"steering_adapter": "org/unknown"})
    assert error.value.code == 400
    assert "unknown steering adapter 'org/unknown'" in error.value.read().decode()
