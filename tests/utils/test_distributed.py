"""Data parallelism on torch.distributed, on CPU with 2 gloo processes of 1 thread each (launched by torchrun):

- the statistics of a sharded collection equal one process's (float64, relative error ≤ 1e-10), projections and kept
  activations are gathered exactly, and the fitted directions are the same;
- ``steering-adapter run`` of the same recipe under ``torchrun --nproc-per-node 2`` writes the records, directions
  and choice of a single-process run;
- killing one rank makes the run fail loudly (non-zero exit, torchrun names the dead worker), and the same command
  resumes without duplicated records;
- processes that disagree about their work fail loudly instead of mixing it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steering_adapter.cli import EXIT_USAGE, main
from steering_adapter.directions.estimators import RidgeMeanDifference, WeightedRidgeMeanDifference
from steering_adapter.directions.fitting import fit_directions
from steering_adapter.directions.labels import CLASSES
from steering_adapter.directions.statistics import ActivationStatistics

ROOT = Path(__file__).resolve().parents[2]
COLLECT = Path(__file__).resolve().parents[1] / "helpers" / "distributed_collect.py"
RECIPE = ROOT / "recipes" / "no-political-refusal.yaml"
SMALL = [
    "sampling.k=1",
    "sampling.max_new_tokens=12",
    "sampling.batch_size=4",
    "prompts.max_train_per_set=16",
    "prompts.max_eval_per_set=4",
    "selection.max_prompts_per_set=4",
    "selection.layer_counts=[2]",
    "selection.alphas=[-1]",
    "selection.refine_steps=0",
    # the mechanics, not the organism's trade-offs, are under test: the one sweep point is always feasible
    "selection.delta=100",
    "selection.kl_budget=null",
    "selection.max_perplexity_ratio=null",
    "selection.min_relevance=null",
    "selection.max_repetition=null",
    "gating.mode=off",
    "relevance=false",
]
TIMEOUT = 900


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error", **extra}


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def run_command(out: Path) -> list[str]:
    command = ["-m", "steering_adapter.cli", "run", str(RECIPE), "--out", str(out), "--no-progress", "--threads", "1"]
    for override in SMALL:
        command += ["--set", override]
    return command


def check(command: list[str], **extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=environment(**extra), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def keys_of(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------- statistics


def test_two_processes_collect_the_statistics_of_one(tmp_path):
    check(torchrun(str(COLLECT), str(tmp_path / "two")))
    check([sys.executable, str(COLLECT), str(tmp_path / "one")])
    assert json.loads((tmp_path / "two" / "world.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "one" / "world.json").read_text())["world_size"] == 1
    for name in ("statistics", "weighted_statistics"):
        two = ActivationStatistics.load(tmp_path / "two" / name)
        one = ActivationStatistics.load(tmp_path / "one" / name)
        for cls in CLASSES:
            assert two.count(cls) == one.count(cls) > 0
            assert two.weight_sum(cls) == pytest.approx(one.weight_sum(cls), rel=1e-12)
            for layer in one.layers:
                position = one.layer_position(layer)
                assert relative_error(two._moments[cls].sums[position], one._moments[cls].sums[position]) <= 1e-10
                assert relative_error(two._moments[cls].outers[position], one._moments[cls].outers[position]) <= 1e-10
                assert relative_error(two.covariance(cls, layer), one.covariance(cls, layer)) <= 1e-10
        estimator = RidgeMeanDifference() if name == "statistics" else WeightedRidgeMeanDifference()
        sharded, single = fit_directions(estimator, two), fit_directions(estimator, one)
        for layer in single:
            torch.testing.assert_close(sharded[layer], single[layer], rtol=1e-6, atol=1e-7)
    # projections and one block's activations: each prompt computed by one process, gathered exactly
    two, one = (load_file(str(tmp_path / run / "tensors.safetensors")) for run in ("two", "one"))
    assert torch.equal(two["projections"], one["projections"]) and torch.equal(two["block2"], one["block2"])
    assert bool((one["block2"].abs().sum(1) > 0).all())


def test_only_run_goes_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["memory", str(RECIPE)]) == EXIT_USAGE
    assert "only `run` shares its work among torchrun's processes" in capsys.readouterr().err


def test_processes_that_diverge_fail_loudly():
    done = subprocess.run(
        torchrun(str(COLLECT), "--diverge"),
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode != 0
    assert "the processes diverged on the test value (rank 0: 0, rank 1: 1)" in done.stderr


# ----------------------------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    check([sys.executable, *run_command(out)])
    return out


def assert_same_run(run: Path, reference: Path) -> None:
    for stage in ("train_scores", "selection/base/base/political"):
        for name in ("answers.jsonl", "judgments.jsonl"):
            path = run / stage / name
            keys = keys_of(path)
            assert len(keys) == len(set(keys)), f"duplicated records in {path}"
            assert sorted(path.read_text().splitlines()) == sorted((reference / stage / name).read_text().splitlines())
    scores = json.loads((run / "train_scores" / "scores.json").read_text())["scores"]
    assert scores == json.loads((reference / "train_scores" / "scores.json").read_text())["scores"]
    directions = load_file(str(run / "directions" / "directions.safetensors"))
    expected = load_file(str(reference / "directions" / "directions.safetensors"))
    assert directions.keys() == expected.keys()
    for layer, vector in expected.items():
        torch.testing.assert_close(directions[layer], vector, rtol=1e-6, atol=1e-7)
    summary = json.loads((run / "summary.json").read_text())
    reference_summary = json.loads((reference / "summary.json").read_text())
    assert (summary["layers"], summary["alpha"]) == (reference_summary["layers"], reference_summary["alpha"])
    for name, entry in reference_summary["report"]["sets"].items():
        for condition in ("base", "steered"):
            mine = summary["report"]["sets"][name][condition]
            assert (mine["n"], mine["refusal_pct"]) == (entry[condition]["n"], entry[condition]["refusal_pct"])
            assert mine["mean_score"] == pytest.approx(entry[condition]["mean_score"], abs=1e-12)
    diagnostics = json.loads((run / "diagnostics" / "diagnostics.json").read_text())
    assert (
        diagnostics["best_layers"]
        == json.loads((reference / "diagnostics" / "diagnostics.json").read_text())["best_layers"]
    )


@pytest.mark.slow
def test_the_same_recipe_runs_on_two_processes(tmp_path, single_run):
    out, scratch = tmp_path / "run", tmp_path / "tmp"
    scratch.mkdir()
    check(torchrun(*run_command(out)), TMPDIR=str(scratch))  # torchrun -m steering_adapter.cli run ...
    assert_same_run(out, single_run)
    assert not any(scratch.glob("steering-adapter-rank*")), "rank 1's scratch folder was not removed"


def worker_pids(marker: str, rank: str) -> list[int]:
    """Processes started with ``STEERING_TEST_RUN=marker`` and ``RANK=rank`` in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            variables = dict(
                item.split("=", 1)
                for item in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
        except OSError:
            continue
        if variables.get("STEERING_TEST_RUN") == marker and variables.get("RANK") == rank:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_loudly_and_a_rerun_resumes(tmp_path, single_run):
    out = tmp_path / "run"
    marker = uuid.uuid4().hex
    command = torchrun(*run_command(out))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment(STEERING_TEST_RUN=marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers = out / "train_scores" / "answers.jsonl"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (answers.exists() and keys_of(answers)):  # the first round of records is written
            assert process.poll() is None, "the run ended before any record was written"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        victims = worker_pids(marker, "1")
        assert victims, "rank 1 not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "ChildFailedError" in stderr or "SIGKILL" in stderr, stderr[-3000:]
    written = keys_of(answers)
    assert 0 < len(written) < len(keys_of(single_run / "train_scores" / "answers.jsonl"))
    assert not (out / "summary.json").exists()

    check(command)  # the same command again: resumes from rank 0's records
    assert_same_run(out, single_run)
