"""Crash-safe records and the resumable scoring run: interruption, truncated lines, no duplicate keys."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from tiny import HARMLESS_PROMPTS, SENSITIVE_PROMPTS

from steering_adapter.measure.judges import Judge, Judgment, PatternJudge
from steering_adapter.measure.sampling import SamplingSettings
from steering_adapter.measure.scored_runs import load_scores, prompt_key, score_prompts
from steering_adapter.utils import records
from steering_adapter.utils.records import JsonlLog, atomic_write_json, atomic_write_text, stable_key

PROMPTS = HARMLESS_PROMPTS[:3] + SENSITIVE_PROMPTS[:3] + ["Hi"]
SAMPLING = dict(k=3, max_new_tokens=5, seed=11)


pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------------------------
# JsonlLog and atomic writes


def test_jsonl_append_read_and_keys(tmp_path):
    log = JsonlLog(tmp_path / "sub" / "log.jsonl")
    assert log.read() == [] and "a" not in log
    assert log.append_keyed({"key": "a", "value": 1.5, "bad": float("nan")})
    assert not log.append_keyed({"key": "a", "value": 2})  # never twice
    log.append({"note": "unkeyed", "text": "中文"})
    assert log.append_keyed({"key": "b", "value": [1, 2]})
    assert log.read() == [
        {"key": "a", "value": 1.5, "bad": None},
        {"note": "unkeyed", "text": "中文"},
        {"key": "b", "value": [1, 2]},
    ]
    assert log.keys() == {"a", "b"} and "b" in log and len(log) == 3
    # a fresh handle on the same file (a re-run) sees the keys too
    again = JsonlLog(log.path)
    assert not again.append_keyed({"key": "b", "value": 3})
    assert [record.get("key") for record in again] == ["a", None, "b"]
    with pytest.raises(ValueError, match="'key' field"):
        log.append_keyed({"value": 1})
    with pytest.raises(ValueError, match="dict"):
        log.append([1, 2])
    with pytest.raises(ValueError, match="JSON"):
        log.append({"key": "c", "value": object()})


def test_jsonl_truncated_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path)
    for key in "abc":
        log.append_keyed({"key": key, "payload": "x" * 50})
    complete = path.read_bytes()
    # a kill in the middle of writing record "d"
    path.write_bytes(complete + b'{"key": "d", "payl')
    reopened = JsonlLog(path)
    assert [r["key"] for r in reopened.read()] == ["a", "b", "c"]
    assert "d" not in reopened
    assert reopened.append_keyed({"key": "d", "payload": "y"})  # the torn tail is cut before appending
    assert path.read_bytes() == complete + b'{"key": "d", "payload": "y"}\n'
    assert [r["key"] for r in JsonlLog(path).read()] == ["a", "b", "c", "d"]

    # a complete record whose newline did not make it is kept and terminated
    path.write_bytes(complete + b'{"key": "e"}')
    reopened = JsonlLog(path)
    assert [r["key"] for r in reopened.read()] == ["a", "b", "c", "e"]
    reopened.append_keyed({"key": "f"})
    assert [r["key"] for r in JsonlLog(path).read()] == ["a", "b", "c", "e", "f"]

    # only the last line may be damaged
    path.write_bytes(b'{"key": "a"}\n{"key": \n{"key": "c"}\n')
    with pytest.raises(ValueError, match="line 2"):
        JsonlLog(path).read()


def test_jsonl_survives_kill_mid_run(tmp_path):
    """A writer process killed hard: every record it finished is readable, and appending continues cleanly."""
    path = tmp_path / "log.jsonl"
    script = textwrap.dedent(
        f"""
        import importlib.util, os
        # load records.py alone (it only needs the standard library): no torch import in the child
        spec = importlib.util.spec_from_file_location("records", {records.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        log = module.JsonlLog({str(path)!r})
        for i in range(5):
            log.append_keyed({{"key": str(i), "blob": "z" * 1000}})
        with open({str(path)!r}, "ab") as handle:  # start a sixth record, then die mid-line
            handle.write(b'{{"key": "5", "blob": "zz')
            handle.flush()
            os._exit(9)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == 9
    log = JsonlLog(path)
    assert [r["key"] for r in log.read()] == ["0", "1", "2", "3", "4"]
    log.append_keyed({"key": "5", "blob": "done"})
    assert [r["key"] for r in JsonlLog(path).read()] == ["0", "1", "2", "3", "4", "5"]


def test_atomic_writes(tmp_path):
    target = tmp_path / "deep" / "scores.json"
    atomic_write_json(target, {"score": float("nan"), "values": [1.0, float("inf")], "name": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"score": None, "values": [1.0, None], "name": "é"}
    atomic_write_text(target, "replaced")
    assert target.read_text() == "replaced"
    assert sorted(os.listdir(target.parent)) == ["scores.json"]  # no temporary files left behind
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "replaced"  # a failed write leaves the old file intact
    assert sorted(os.listdir(target.parent)) == ["scores.json"]


def test_stable_key():
    assert stable_key("p", {"b": 1, "a": 2}) == stable_key("p", {"a": 2, "b": 1})
    assert stable_key("p", {"a": 1}) != stable_key("p", {"a": 2})
    # fixed across processes and Python versions (no hash())
    expected = hashlib.sha256(b'["p",{"a":1}]').hexdigest()[:24]
    assert stable_key("p", {"a": 1}) == expected


# ---------------------------------------------------------------------------------------------------------------
# The resumable scoring run


class HashJudge(Judge):
    """Deterministic mixed labels (+1 / -1 / 0) from a hash of the answer text."""

    def __init__(self):
        self.calls = 0

    @property
    def name(self):
        return "hash-judge"

    def judge(self, prompt, answer):
        self.calls += 1
        label = (1, -1, 1, 0)[hashlib.sha256(answer.encode()).digest()[0] % 4]
        return Judgment(label, "hash", answer[:10])


class FlakyJudge(HashJudge):
    """Like HashJudge, but raises on call number ``fail_at``."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at

    def judge(self, prompt, answer):
        if self.calls + 1 == self.fail_at:
            raise RuntimeError("judge endpoint went away")
        return super().judge(prompt, answer)


def keys_of(path):
    return [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]


def read_answers(run_dir):
    return [json.loads(line)["answers"] for line in (run_dir / "answers.jsonl").read_text().splitlines()]


def assert_same_scores(left, right):
    assert [s.key for s in left] == [s.key for s in right]
    for a, b in zip(left, right, strict=True):
        assert a.labels == b.labels and a.label == b.label and a.prompt_id == b.prompt_id
        assert (math.isnan(a.score) and math.isnan(b.score)) or a.score == pytest.approx(b.score, abs=1e-12)
        assert a.mean_logprobs == pytest.approx(b.mean_logprobs, abs=1e-9)


@pytest.mark.parametrize("overlap", [True, False])
def test_interrupted_run_resumes_to_the_same_scores(tmp_path, llama, tokenizer, overlap):
    reference = score_prompts(
        llama, tokenizer, PROMPTS, HashJudge(), tmp_path / "straight", batch_size=2, progress=False, **SAMPLING
    )
    assert len(reference) == len(PROMPTS)
    assert len({s.label for s in reference}) > 1, "the test judge should give varied classes"

    run_dir = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="went away"):
        score_prompts(
            llama,
            tokenizer,
            PROMPTS,
            FlakyJudge(fail_at=8),
            run_dir,
            batch_size=2,
            progress=False,
            overlap=overlap,
            **SAMPLING,
        )
    # chunks of 2 prompts x 3 answers: the first chunk (6 judgments) is logged, the second failed mid-way; with the
    # overlap, the third chunk was sampled (and logged) while the second was judged
    assert len(keys_of(run_dir / "answers.jsonl")) == (6 if overlap else 4)
    assert len(keys_of(run_dir / "judgments.jsonl")) == 2
    assert not (run_dir / "scores.json").exists()

    judge = HashJudge()
    resumed = score_prompts(llama, tokenizer, PROMPTS, judge, run_dir, batch_size=2, progress=False, **SAMPLING)
    assert judge.calls == 3 * (len(PROMPTS) - 2)  # only what was missing
    assert_same_scores(reference, resumed)
    assert_same_scores(reference, load_scores(run_dir))
    for name in ("answers.jsonl", "judgments.jsonl"):
        keys = keys_of(run_dir / name)
        assert len(keys) == len(set(keys)) == len(PROMPTS)

    # a finished run re-run: nothing sampled or judged again, nothing appended
    before = (run_dir / "answers.jsonl").read_bytes(), (run_dir / "judgments.jsonl").read_bytes()
    untouched = FlakyJudge(fail_at=1)
    again = score_prompts(llama, tokenizer, PROMPTS, untouched, run_dir, batch_size=2, progress=False, **SAMPLING)
    assert_same_scores(reference, again)
    assert before == ((run_dir / "answers.jsonl").read_bytes(), (run_dir / "judgments.jsonl").read_bytes())

    summary = json.loads((run_dir / "scores.json").read_text())
    assert summary["judge"] == "hash-judge" and summary["settings"]["k"] == 3
    assert summary["summary"]["n"] == len(PROMPTS)


def test_truncated_answers_log_resumes_to_the_same_scores(tmp_path, llama, tokenizer):
    run_dir = tmp_path / "run"
    reference = score_prompts(
        llama, tokenizer, PROMPTS, HashJudge(), run_dir, batch_size=3, progress=False, **SAMPLING
    )
    answers = run_dir / "answers.jsonl"
    data = answers.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    answers.write_bytes(data[: last_start + 40])  # killed while writing the last prompt's answers
    (run_dir / "judgments.jsonl").write_bytes(b"")
    resumed = score_prompts(llama, tokenizer, PROMPTS, HashJudge(), run_dir, batch_size=3, progress=False, **SAMPLING)
    assert_same_scores(reference, resumed)  # the partly logged chunk is re-sampled identically
    keys = keys_of(answers)
    assert len(keys) == len(set(keys)) == len(PROMPTS)


def test_settings_and_judge_key_the_records(tmp_path, llama, tokenizer):
    run_dir = tmp_path / "run"
    prompts = ["Hi", "How do I bake bread at home?", "Hi"]
    first = score_prompts(llama, tokenizer, prompts, HashJudge(), run_dir, batch_size=4, progress=False, k=2)
    assert [s.prompt_id for s in first] == ["0", "1", "2"]
    assert first[0].key == first[2].key and first[0].labels == first[2].labels  # duplicates scored once
    assert len(keys_of(run_dir / "answers.jsonl")) == 2
    # other settings: new keys, new samples
    score_prompts(llama, tokenizer, prompts, HashJudge(), run_dir, batch_size=4, progress=False, k=2, seed=1)
    assert len(keys_of(run_dir / "answers.jsonl")) == 4
    # another judge on the same answers: answers reused, judged anew
    pattern = score_prompts(llama, tokenizer, prompts, PatternJudge(), run_dir, batch_size=4, progress=False, k=2)
    assert len(keys_of(run_dir / "answers.jsonl")) == 4
    assert len(keys_of(run_dir / "judgments.jsonl")) == 6
    assert [s.mean_logprobs for s in pattern] == [s.mean_logprobs for s in first]
    assert prompt_key("Hi", SamplingSettings(k=2).to_dict()) == first[0].key
    assert SamplingSettings(k=2).to_dict() == SamplingSettings(k=2, temperature=1.0).to_dict()


def test_judgments_with_backend_errors_are_retried(tmp_path, llama, tokenizer):
    class BrokenJudge(HashJudge):
        def judge(self, prompt, answer):
            self.calls += 1
            return Judgment(0, "", "", error="HTTP 500 after retries")

    run_dir = tmp_path / "run"
    broken = score_prompts(llama, tokenizer, ["Hi"], BrokenJudge(), run_dir, progress=False, k=2)
    assert math.isnan(broken[0].score) and broken[0].label == "unjudged"
    assert not (run_dir / "judgments.jsonl").exists() or keys_of(run_dir / "judgments.jsonl") == []
    judge = HashJudge()
    fixed = score_prompts(llama, tokenizer, ["Hi"], judge, run_dir, progress=False, k=2)
    assert judge.calls == 2 and len(keys_of(run_dir / "judgments.jsonl")) == 1
    assert fixed[0].labels == [judge.judge("Hi", answer["text"]).label for answer in read_answers(run_dir)[0]]


def test_score_prompts_errors(tmp_path, llama, tokenizer):
    with pytest.raises(ValueError, match="empty"):
        score_prompts(llama, tokenizer, [], HashJudge(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown sampling settings"):
        score_prompts(llama, tokenizer, ["Hi"], HashJudge(), tmp_path, progress=False, temprature=0.5)
    with pytest.raises(ValueError, match="plain JSON"):
        score_prompts(llama, tokenizer, ["Hi"], HashJudge(), tmp_path, progress=False, generate_kwargs={"x": object()})

    class ShortJudge(HashJudge):
        def judge_many(self, pairs):
            return []

    with pytest.raises(ValueError, match="returned 0 judgments"):
        score_prompts(llama, tokenizer, ["Hi"], ShortJudge(), tmp_path, progress=False, k=1, max_new_tokens=2)


def test_overlapped_judging_writes_the_records_of_the_sequential_path(tmp_path, llama, tokenizer):
    runs = {}
    for overlap in (False, True):
        run_dir = tmp_path / f"overlap-{overlap}"
        scores = score_prompts(
            llama, tokenizer, PROMPTS, HashJudge(), run_dir, batch_size=2, progress=False, overlap=overlap, **SAMPLING
        )
        runs[overlap] = (scores, *((run_dir / name).read_bytes() for name in ("answers.jsonl", "judgments.jsonl")))
    assert runs[True][1:] == runs[False][1:]  # byte for byte, in chunk order
    assert_same_scores(runs[True][0], runs[False][0])


def test_judging_runs_while_the_next_chunk_is_sampled(tmp_path, llama, tokenizer):
    """The first chunk's judging waits until the model starts sampling the second chunk: it can only finish when the
    two overlap (the sequential path would wait out the timeout)."""
    second_chunk_sampling = threading.Event()
    prompts_seen = []

    def watch(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # a prompt pass (not a decoding step)
            prompts_seen.append(ids.shape[0])
            if len(prompts_seen) == 2:
                second_chunk_sampling.set()

    class WaitingJudge(HashJudge):
        def __init__(self):
            super().__init__()
            self.threads = set()
            self.overlapped = None

        def judge_many(self, pairs):
            self.threads.add(threading.current_thread().name)
            if self.overlapped is None:
                self.overlapped = second_chunk_sampling.wait(timeout=20)
            return super().judge_many(pairs)

    judge = WaitingJudge()
    handle = llama.register_forward_pre_hook(watch, with_kwargs=True)
    try:
        score_prompts(llama, tokenizer, PROMPTS[:4], judge, tmp_path, batch_size=2, progress=False, **SAMPLING)
    finally:
        handle.remove()
    assert judge.overlapped is True
    assert threading.current_thread().name not in judge.threads
