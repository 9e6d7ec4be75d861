"""``vllm serve`` with a steering adapter answers steered through the OpenAI-compatible API (real HTTP over
loopback), launched the documented way (python -m steering_adapter.runtimes.vllm.serve); concurrent requests select
their own adapter with ``vllm_xargs``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import heldout_prompts, vllm_server
from test_steering import ADD, reference

from steering_adapter.models.organism import ORGANISM_DIR

MAX_TOKENS = 48


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(adapter_dirs, tmp_path_factory):
    # req-ablate is declared here: serve takes exactly the request adapters its command line declares (see
    # test_serve_declares_exactly_its_request_adapters)
    arguments = ["steering_adapter.runtimes.vllm.serve", str(ORGANISM_DIR), "--adapter", str(adapter_dirs["add"])]
    arguments += ["--request-adapter", f"req-ablate={adapter_dirs['ablate']}"]
    arguments += ["--", "--dtype", "float32", "--max-model-len", "256", "--served-model-name", "organism"]
    # dev mode: vLLM's POST /collective_rpc, through which a running server changes its adapters
    with vllm_server(
        arguments, tmp_path_factory.mktemp("serve") / "serve.log", env={"VLLM_SERVER_DEV_MODE": "1"}
    ) as url:
        yield url


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


def test_the_running_server_switches_adapters(server, organism, vectors, adapter_dirs):
    """Replace the server's adapter (compiled mode: the slots are rewritten, nothing is compiled again) through
    vLLM's /collective_rpc and the worker extension; answers follow the new adapter, then the old one again."""
    prompts = heldout_prompts(4)
    settings = dict(k=1, temperature=0.0, max_new_tokens=MAX_TOKENS)
    for folder, hooks in (
        (adapter_dirs["ablate"], [{"vectors": vectors["ablate"], "mode": "ablate"}]),
        (adapter_dirs["add"], [{"vectors": vectors["add"], **ADD}]),
    ):
        body = {"method": "steering_set_adapters", "args": [json.dumps([str(folder)])]}
        described = _post(f"{server}/collective_rpc", body)["results"][0]
        assert [a["mode"] for a in described] == [h["mode"] for h in hooks]
        served = [_chat(server, prompt) for prompt in prompts]
        assert served == [s.answers[0].text for s in reference(organism, prompts, hooks, **settings)]


def test_undeclared_request_adapter_is_a_400(server):
    with pytest.raises(urllib.error.HTTPError) as error:
        _chat(server, "hello", {"steering_adapter": "org/unknown"})
    assert error.value.code == 400
    assert "unknown steering adapter 'org/unknown'" in error.value.read().decode()


class _Exec(Exception):
    """Raised instead of replacing the process with vLLM's server."""


def test_serve_declares_exactly_its_request_adapters(monkeypatch):
    """Started without ``--request-adapter``, serve drops a declaration inherited from its caller's environment
    (the server would otherwise accept adapters no flag named); with one, the variable holds exactly its flags."""
    from steering_adapter.runtimes.vllm import serve
    from steering_adapter.runtimes.vllm.batch import REQUEST_ADAPTERS_ENV

    def fake_exec(path, arguments):
        raise _Exec

    monkeypatch.setattr(serve.os, "execv", fake_exec)
    monkeypatch.setenv(REQUEST_ADAPTERS_ENV, json.dumps([{"name": "inherited", "path": "/elsewhere"}]))
    with pytest.raises(_Exec):
        serve.main([str(ORGANISM_DIR)])
    assert REQUEST_ADAPTERS_ENV not in serve.os.environ
    with pytest.raises(_Exec):
        serve.main([str(ORGANISM_DIR), "--request-adapter", "mine=/adapters/mine"])
    assert json.loads(serve.os.environ[REQUEST_ADAPTERS_ENV]) == [{"name": "mine", "path": "/adapters/mine"}]
