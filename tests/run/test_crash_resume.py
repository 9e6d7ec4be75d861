"""Crash safety of a whole run: `steering-adapter run` killed with SIGKILL inside each stage (scoring, collection, the
base answers of the sweep, the sweep points, the ungated and the gated final evaluation) and restarted each time ends
with the same results as an uninterrupted run, and no record is duplicated, lost or moved aside.

The kills are driven by the run's own progress: a watcher polls the run folder (the stages' JSONL records and the
files that mark a stage finished) and the run's log, and sends SIGKILL once a stage has written some but not all of
the records the uninterrupted run wrote for it. After each kill the test checks, from the folder the killed process
left, that the kill landed inside that stage: its records begun, short of the uninterrupted run's, its closing file
not written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "no-political-refusal.yaml"
SETTINGS = [
    "sampling.k=2",
    "sampling.max_new_tokens=24",
    "prompts.max_train_per_set=48",
    "prompts.max_eval_per_set=12",
    "selection.max_prompts_per_set=8",
    "selection.layer_counts=[3]",
    "selection.alphas=[-2,-6]",
    "selection.refine_steps=1",
]
RUN_TIMEOUT = 900.0  # seconds, for one (killed or complete) run
POLL = 0.05  # seconds between two looks at the run folder


def _command(out: Path) -> list[str]:
    command = [sys.executable, "-u", "-m", "steering_adapter.cli", "run", str(RECIPE), "--out", str(out)]
    for setting in SETTINGS:
        command += ["--set", setting]
    return command + ["--no-progress", "--threads", "1"]


def _run_to_end(out: Path) -> None:
    done = subprocess.run(_command(out), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]


# ------------------------------------------------------------------------------------------- progress of a run
def _lines(path: Path) -> int:
    """Complete records of a JSONL file (a torn last line does not count)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _jsonl_records(out: Path, pattern: str) -> int:
    """Complete records in the JSONL files of ``out`` matching ``pattern``."""
    return sum(_lines(path) for path in out.glob(pattern))


def _base_sets_scored(out: Path) -> int:
    """Evaluation sets whose base answers the sweep has scored (``selection/base/base/<set>/scores.json``)."""
    return len(list(out.glob("selection/base/**/scores.json")))


def _points_reported(out: Path) -> int:
    """Sweep points (layers × α) whose report is written (``selection/<point>/report.json``, the base pass aside)."""
    return len([p for p in out.glob("selection/*/report.json") if p.parent.name != "base"])


@dataclass(frozen=True)
class KillPoint:
    """Where in a run to kill it.

    Attributes:
        stage: what the kill interrupts (for messages).
        progress: the stage's progress in a run folder (records or files written so far).
        closing: the file the stage writes when it is finished, relative to the run folder.
        after_line: a log line prefix that opens the stage; when set, the kill is sent as soon as it appears (a stage
            that writes nothing until it ends), and ``progress`` is not used.
    """

    stage: str
    progress: Callable[[Path], int] | None
    closing: str
    after_line: str | None = None


KILL_POINTS = [
    KillPoint("scoring", lambda out: _jsonl_records(out, "train_scores/*.jsonl"), "train_scores/scores.json"),
    # collection writes nothing until the directions are fitted: killed on the line that opens it, after the scores
    KillPoint("collection", None, "directions/directions.json", after_line="[collect]"),
    KillPoint("sweep, base answers", _base_sets_scored, "selection/base/report.json"),
    KillPoint("sweep, steered points", _points_reported, "selection/sweep.json"),
    KillPoint(
        "ungated evaluation",
        lambda out: _jsonl_records(out, "evaluation_ungated/**/*.jsonl"),
        "evaluation_ungated/report.json",
    ),
    KillPoint("gated evaluation", lambda out: _jsonl_records(out, "evaluation/**/*.jsonl"), "evaluation/report.json"),
]


def _run_and_kill(out: Path, point: KillPoint, target: int) -> tuple[bool, list[str]]:
    """Start a run and SIGKILL it once ``point.progress(out) >= target`` (or its log shows ``point.after_line``).

    Returns:
        ``(killed, log lines)``: ``killed`` is ``True`` when the kill hit the running process.
    """
    process = subprocess.Popen(_command(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def drain() -> None:  # the log, line by line as it comes (and the pipe never fills)
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if point.after_line is not None:
                reached = any(line.startswith(point.after_line) for line in list(lines))
            else:
                reached = point.progress(out) >= target
            if reached:
                break
            time.sleep(POLL)
        alive = process.poll() is None
        if alive:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    reader.join(timeout=10)
    return alive and process.returncode == -signal.SIGKILL, lines


def _records(out: Path) -> dict[str, list[str]]:
    """Every keyed JSONL record of a run folder, by file (relative path), as a list of keys."""
    found = {}
    for path in sorted(out.rglob("*.jsonl")):
        keys = [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]
        found[str(path.relative_to(out))] = keys
    return found


def _results(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {key: summary[key] for key in ("layers", "alpha", "gated", "report", "ungated_report")}


def test_sigkill_inside_every_stage_then_resume_gives_the_same_run(tmp_path):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run_to_end(clean)
    for point in KILL_POINTS:
        total = point.progress(clean) if point.progress is not None else 0
        target = max(1, total // 2)  # some of the stage's records, not all
        assert point.after_line is not None or target < total, (point.stage, total)
        killed, lines = _run_and_kill(crashed, point, target)
        tail = "".join(lines[-20:])
        assert killed, f"the run ended before the kill point in {point.stage}:\n{tail}"
        # the folder the killed process left: the stage begun (its opening line, or some of its records) and not
        # finished (fewer records than the uninterrupted run, no closing file)
        assert not (crashed / point.closing).exists(), f"the kill in {point.stage} came after {point.closing}"
        if point.after_line is not None:
            assert any(line.startswith(point.after_line) for line in lines), point.stage
        else:
            done = point.progress(crashed)
            assert target <= done < total, f"{point.stage}: killed at {done} of {total} (target {target})"
    _run_to_end(crashed)

    assert _results(crashed) == _results(clean)
    assert not list(crashed.glob("*.stale-*")), "a resumed stage was moved aside instead of continued"
    clean_records, crashed_records = _records(clean), _records(crashed)
    for name, keys in crashed_records.items():
        duplicated = [key for key, n in Counter(keys).items() if n > 1]
        assert not duplicated, f"{name}: duplicated records {duplicated[:3]}"
    # every record of the uninterrupted run exists after the crashes
    for name, keys in clean_records.items():
        assert sorted(crashed_records.get(name, [])) == sorted(keys), name
