"""Judging overlapped with sampling vs alternating, side by side, with an OpenAI-compatible judge endpoint.

Run (CPU, no downloads; about a minute on 2 cores)::

    python benchmarks/scoring.py
    python benchmarks/scoring.py --latency 0.2 --concurrency 8 --prompts 48

A local HTTP server plays an OpenAI-compatible judge (``/v1/chat/completions``) that answers every request after
``--latency`` seconds (as a remote vLLM or hosted endpoint would), with a verdict derived from the answer text; the
judge is the library's ``LLMJudge`` on ``OpenAIChatBackend`` with ``--concurrency`` requests in flight. The model is
the embedded organism. ``score_prompts`` runs the same prompts twice into fresh folders: ``overlap=False`` (sample a
chunk, then judge it) and ``overlap=True`` (judge chunk ``i`` in a worker while chunk ``i + 1`` is sampled). Printed:
the wall time of each, their ratio (the gain), the time spent sampling and judging alone for reference, and whether
the two runs wrote byte-identical records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steering_adapter.measure.judges import LLMJudge, OpenAIChatBackend  # noqa: E402
from steering_adapter.measure.scored_runs import score_prompts  # noqa: E402
from steering_adapter.models.organism import load_organism  # noqa: E402
from steering_adapter.models.organism.data import load_examples  # noqa: E402


class SlowJudgeServer:
    """``/v1/chat/completions`` on 127.0.0.1: answers after ``latency`` seconds, verdict from a hash of the text."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests += 1
                time.sleep(server.latency)
                text = json.dumps(body["messages"])
                verdict = "refusal" if hashlib.sha256(text.encode()).digest()[0] % 2 else "not refusal"
                message = {"role": "assistant", "content": f"Judged. <answer>{verdict}</answer>"}
                data = json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SlowJudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32, help="organism prompts (default 32)")
    parser.add_argument("--k", type=int, default=3, help="answers per prompt (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="answer length (default 48)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per chunk (default 8)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per judge request (default 0.1)")
    parser.add_argument("--concurrency", type=int, default=4, help="judge requests in flight (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_organism()
    examples = [e for e in load_examples() if e.split == "train" and e.category in ("political", "benign")]
    prompts = [e.prompt for e in examples][: args.prompts]
    sampling = dict(k=args.k, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    print(
        f"organism, {len(prompts)} prompts × K={args.k}, {args.max_new_tokens} new tokens, chunks of "
        f"{args.batch_size}; judge: OpenAI-compatible endpoint, {args.latency:.2f} s per request, "
        f"{args.concurrency} in flight; torch {args.threads} threads\n"
    )
    with SlowJudgeServer(args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        judge = LLMJudge(OpenAIChatBackend(server.url, model="slow-judge", max_concurrency=args.concurrency))
        score_prompts(model, tokenizer, prompts[:2], judge, Path(tmp) / "warm-up", progress=False, **sampling)
        seconds = {}
        for overlap in (False, True):
            start = time.perf_counter()
            score_prompts(
                model,
                tokenizer,
                prompts,
                judge,
                Path(tmp) / f"overlap-{overlap}",
                batch_size=args.batch_size,
                progress=False,
                overlap=overlap,
                **sampling,
            )
            seconds[overlap] = time.perf_counter() - start
        identical = all(
            (Path(tmp) / "overlap-False" / name).read_bytes() == (Path(tmp) / "overlap-True" / name).read_bytes()
            for name in ("answers.jsonl", "judgments.jsonl")
        )
    judging_alone = len(prompts) * args.k / args.concurrency * args.latency
    print("| path | wall s |")
    print("|---|---:|")
    print(f"| sample a chunk, then judge it (overlap=False) | {seconds[False]:.1f} |")
    print(f"| judge chunk i while sampling chunk i+1 (overlap=True) | {seconds[True]:.1f} |")
    print(f"| judging alone (requests × latency / concurrency) | {judging_alone:.1f} |")
    print(f"| sampling alone (≈ alternating − judging) | {seconds[False] - judging_alone:.1f} |")
    print(f"\nspeed-up of the overlap: {seconds[False] / seconds[True]:.2f}×; records byte-identical: {identical}")


if __name__ == "__main__":
    main()
