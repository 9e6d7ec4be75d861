"""Crash safety of a whole run: `steering-adapter run` killed with SIGKILL at several points (scoring, collection,
the sweep, the final evaluation) and restarted each time ends with the same results as an uninterrupted run, and no
record is duplicated or lost.

The kill points are chosen by a seeded RNG as delays after the log line that opens each stage, so each kill lands
inside that stage's work (the test checks that the killed process was still running when killed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "no-political-refusal.yaml"
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
# (log line that opens a stage, the range of seconds to wait after it before SIGKILL)
KILL_POINTS = [
    ("[score]", (0.5, 3.0)),
    ("[collect]", (0.0, 0.3)),
    ("[select]", (1.0, 6.0)),
    ("[select]", (8.0, 16.0)),
    ("[evaluate]", (0.5, 4.0)),
]


def _command(out: Path) -> list[str]:
    command = [sys.executable, "-u", "-m", "steering_adapter.cli", "run", str(RECIPE), "--out", str(out)]
    for setting in SETTINGS:
        command += ["--set", setting]
    return command + ["--no-progress", "--threads", "1"]


def _run_to_end(out: Path) -> None:
    done = subprocess.run(_command(out), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _run_and_kill(out: Path, marker: str, delay: float) -> bool:
    """Start a run, SIGKILL it ``delay`` s after ``marker`` appears; ``True`` when the kill hit a running process."""
    process = subprocess.Popen(_command(out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith(marker):
            time.sleep(delay)
            break
    alive = process.poll() is None
    if alive:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return alive and process.returncode == -signal.SIGKILL


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


def test_sigkill_at_random_points_then_resume_gives_the_same_run(tmp_path):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run_to_end(clean)
    rng = random.Random(1234)
    hits = [_run_and_kill(crashed, marker, rng.uniform(*bounds)) for marker, bounds in KILL_POINTS]
    assert sum(hits) >= 5, f"only {sum(hits)} of the kills hit a running process: {hits}"
    _run_to_end(crashed)

    assert _results(crashed) == _results(clean)
    clean_records, crashed_records = _records(clean), _records(crashed)
    for name, keys in crashed_records.items():
        duplicated = [key for key, n in Counter(keys).items() if n > 1]
        assert not duplicated, f"{name}: duplicated records {duplicated[:3]}"
    # every record of the uninterrupted run exists after the crashes (stage folders moved aside are never reused)
    for name, keys in clean_records.items():
        assert sorted(crashed_records.get(name, [])) == sorted(keys), name
