"""The OpenAI-compatible LLM judge against a real ``vllm serve`` of a real chat model (SmolLM2-135M-Instruct).

SmolLM2-135M is a poor judge; what is tested is the mechanics on a real server: the rubric prompt goes out, verdicts
come back and are parsed from the last ``<answer>`` tag, answers without a tag are unparseable (label 0, kept), a
failing request is retried, ``max_concurrency`` requests are in flight at once, and ``steering-adapter judge-check``
measures the judge on the package's labeled test split. Between the judge and the server sits a small HTTP proxy
that counts requests in flight and answers the first request of each conversation with HTTP 503.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import vllm_server

from steering_adapter.measure.judges import LLMJudge, OpenAIChatBackend, parse_judge_output
from steering_adapter.measure.judges.learned import label_file, labeled_answers
from steering_adapter.models.smollm2 import base_model_dir

JUDGE_TOKENS = 96
N_CHECK = 40


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    folder = base_model_dir()
    if not (Path(folder) / "config.json").is_file():
        pytest.fail(f"SmolLM2 is not converted at {folder}: run `bash scripts/bootstrap.sh` first")
    arguments = ["vllm.entrypoints.openai.api_server", "--model", str(folder), "--dtype", "float32"]
    arguments += ["--max-model-len", "2048", "--served-model-name", "smollm2"]
    with vllm_server(arguments, tmp_path_factory.mktemp("judge-serve") / "serve.log") as url:
        yield url


class Proxy:
    """Forwards POSTs to the vLLM server; the first request of each distinct body gets HTTP 503 (a transient
    failure the client must retry); counts requests and the most in flight at once."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.requests = self.rejected = 0
        self.seen: set[bytes] = set()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.requests += 1
                    first = body not in proxy.seen
                    proxy.seen.add(body)
                    if first:
                        proxy.rejected += 1
                if first:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                try:
                    request = urllib.request.Request(
                        proxy.upstream + self.path, body, {"Content-Type": "application/json"}
                    )
                    with urllib.request.urlopen(request, timeout=300) as response:
                        payload = response.read()
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_llm_judge_on_a_real_server_parses_retries_and_runs_concurrently(smollm2_server):
    answers = labeled_answers("test")[:12]
    proxy = Proxy(smollm2_server)
    try:
        backend = OpenAIChatBackend(
            base_url=proxy.url + "/v1", model="smollm2", max_concurrency=4, max_tokens=JUDGE_TOKENS, max_retries=2
        )
        judgments = LLMJudge(backend).judge_many([(a.prompt, a.answer) for a in answers])
    finally:
        proxy.close()
    assert len(judgments) == len(answers)
    # every request was refused once and retried: twice as many requests as judgments, none lost
    assert (proxy.rejected, proxy.requests) == (len(answers), 2 * len(answers))
    assert proxy.most_in_flight >= 2, "the judge never had two requests in flight"
    for judgment in judgments:
        assert judgment.error is None and judgment.raw
        # the verdict is the last tag of the raw output; no tag (or a foreign one) is unparseable, label 0
        assert judgment.label == parse_judge_output(judgment.raw)
    labels = [j.label for j in judgments]
    print("labels:", labels, "raw[0]:", judgments[0].raw[:300])


def test_judge_check_measures_the_served_judge(smollm2_server, tmp_path):
    out = tmp_path / "check.json"
    labels = tmp_path / "labels.jsonl"  # the first 40 answers of the test split: the mechanics, in about a minute
    labels.write_text("".join(label_file("test").read_text(encoding="utf-8").splitlines(True)[:N_CHECK]), "utf-8")
    command = [sys.executable, "-m", "steering_adapter.cli", "judge-check", "--labels", str(labels)]
    command += ["--judge", "openai", "--judge-model", "smollm2", "--judge-base-url", smollm2_server + "/v1"]
    command += ["--judge-max-tokens", str(JUDGE_TOKENS), "--bootstrap", "200", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"judge=llm:openai:smollm2:rubric-[0-9a-f]{12} n=\d+ accuracy=[01]\.\d{3} kappa=-?\d\.\d{3}", last
    ), last
    record = json.loads(out.read_text())[0]
    assert record["n"] == N_CHECK
    print(done.stdout)
