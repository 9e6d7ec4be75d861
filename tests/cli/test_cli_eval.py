"""`steering-adapter eval` scores what the user gave (whole files by default, --sample N, the printed count), reuses a
recipe's judge and sampling, and --threads / $STEERING_ADAPTER_THREADS set torch's threads."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.cli import EXIT_OK, main
from steering_adapter.measure.judges.pattern import DEFAULT_REFUSAL_PATTERNS, PatternJudge
from steering_adapter.models.organism import load_organism
from steering_adapter.utils.threads import (
    THREADS_ENV,
    busy_cores,
    configure_threads,
    default_threads,
    physical_cores,
)

FAST = ["--k", "1", "--max-new-tokens", "6", "--no-relevance", "--no-progress", "--batch-size", "32"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    model, _ = load_organism()
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    peft_model = adapter_from_vectors(model, {3: vector}, scale=-1.0)
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(peft_model, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "organism"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _prompt_file(tmp_path, n):
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"Question number {i}: what is {i} plus {i}?\n" for i in range(n)))
    return path


def test_prompt_file_is_scored_whole_and_counted_first(adapter, tmp_path, capsys):
    path = _prompt_file(tmp_path, 37)
    out = tmp_path / "eval"
    assert main(["eval", str(adapter), "--sets", f"mine={path}:other", "--out", str(out), *FAST]) == EXIT_OK
    printed = capsys.readouterr().out
    assert printed.startswith("[eval] scoring 37 prompts (all): mine 37 (other)")
    report = json.loads((out / "report.json").read_text())
    assert report["sets"]["mine"]["base"]["n"] == report["sets"]["mine"]["steered"]["n"] == 37


def test_sample_is_seeded_and_sized(adapter, tmp_path, capsys):
    path = _prompt_file(tmp_path, 37)
    runs = []
    for index in range(2):
        out = tmp_path / f"eval{index}"
        args = [
            "eval",
            str(adapter),
            "--sets",
            f"mine={path}:other",
            "--sample",
            "5",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
        assert main([*args, *FAST]) == EXIT_OK
        records = [json.loads(line) for line in (out / "base" / "mine" / "answers.jsonl").read_text().splitlines()]
        runs.append(sorted(r["prompt"] for r in records))
    assert len(runs[0]) == 5 and runs[0] == runs[1]
    assert "[eval] scoring 5 prompts (all): mine 5 (other)" in capsys.readouterr().out
    assert main(["eval", str(adapter), "--sets", f"mine={path}:other", "--sample", "0", *FAST]) == 2


def test_recipe_supplies_judge_sampling_and_sets(adapter, tmp_path, capsys):
    recipe = {
        "name": "r",
        "prompts": {
            "refusal": ["organism:political"],
            "compliance": ["organism:benign"],
            "evaluation": [{"name": "pol", "source": "organism:political", "role": "target"}],
        },
        "judge": {"kind": "pattern", "extra_refusal_patterns": ["zebra crossing"]},
        "sampling": {"k": 2, "max_new_tokens": 5, "seed": 11, "batch_size": 64},
        "relevance": False,
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "eval"
    args = ["eval", str(adapter), "--recipe", str(path), "--split", "test", "--out", str(out), "--no-progress"]
    assert main(args) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    expected_judge = PatternJudge(refusal_patterns=(*DEFAULT_REFUSAL_PATTERNS, "zebra crossing")).name
    assert report["settings"]["judge"] == expected_judge
    assert report["settings"]["sampling"]["k"] == 2 and report["settings"]["sampling"]["seed"] == 11
    from steering_adapter.run.recipe import recipe_from_dict
    from steering_adapter.run.stages.inputs import resolve_prompts

    test_half = resolve_prompts("organism:political", "test", recipe_from_dict(recipe), capped=False)
    assert report["sets"]["pol"]["base"]["n"] == len(test_half)
    assert f"pol {len(test_half)} (target)" in capsys.readouterr().out


def test_jailbreak_set_and_unparseable_option(adapter, tmp_path, capsys):
    path = _prompt_file(tmp_path, 3)
    out = tmp_path / "eval"
    args = ["eval", str(adapter), "--sets", f"jb=jailbreak:{path}:harmful", "--unparseable", "drop", "--out", str(out)]
    assert main([*args, *FAST]) == EXIT_OK
    assert "[eval] scoring 15 prompts (all): jb 15 (harmful)" in capsys.readouterr().out  # 3 prompts × 5 families
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["unparseable"] == "drop"
    assert json.loads((out / "steered" / "jb" / "scores.json").read_text())["unparseable"] == "drop"
    row = report["sets"]["jb"]["steered"]
    assert row["attack_success_pct"] == pytest.approx(100 - row["refusal_pct"])
    assert len(row["families"]) == 5 and all(family["n"] == 3 for family in row["families"].values())
    bad = ["eval", str(adapter), "--sets", "jb=jailbreak:dan:jbb_harmful:harmful", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    assert "'jailbreak:dan:jbb_harmful': unknown attack family 'dan'" in capsys.readouterr().err


def test_missing_sets_without_recipe_is_a_usage_error(adapter, capsys):
    assert main(["eval", str(adapter)]) == 2
    assert "--sets" in capsys.readouterr().err


def test_threads_option_and_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv(THREADS_ENV, "2")
        assert configure_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "many")
        with pytest.raises(ValueError, match="must be an integer"):
            configure_threads()
        monkeypatch.delenv(THREADS_ENV)
        monkeypatch.setattr("steering_adapter.utils.threads.busy_cores", lambda: 0.2)
        assert configure_threads() == physical_cores()  # an idle machine: every core
        monkeypatch.setattr("steering_adapter.utils.threads.busy_cores", lambda: None)  # no /proc/stat
        monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.0, 0.0))
        assert configure_threads() == physical_cores()
        with pytest.raises(ValueError, match=">= 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_busy_cores_reads_the_kernel_counters(tmp_path, monkeypatch):
    stat = tmp_path / "stat"

    def write(user, system, idle, iowait):
        stat.write_text(f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 1 0 0 0\ncpu1 1 0 0 0\nintr 5\n")

    write(1000, 200, 5000, 50)
    # over the interval: 60 + 40 busy ticks, 90 + 10 idle ones on 2 CPUs -> one core's worth busy
    monkeypatch.setattr("steering_adapter.utils.threads.time.sleep", lambda seconds: write(1060, 240, 5090, 60))
    assert busy_cores(stat) == pytest.approx(1.0)
    assert busy_cores(tmp_path / "missing") is None
    stat.write_text("not the kernel's counters\n")
    assert busy_cores(stat) is None


def test_busy_cores_sees_a_process_that_keeps_a_core_busy():
    import subprocess
    import sys

    if busy_cores() is None:
        pytest.skip("no /proc/stat on this platform")
    spinner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nprint(flush=True)\nend = time.time() + 20\nwhile time.time() < end: pass",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        spinner.stdout.readline()  # it runs
        assert busy_cores(interval=0.5) >= 0.8
    finally:
        spinner.kill()
        spinner.wait()


def test_default_threads_leave_busy_cores_alone():
    assert default_threads(cores=2, load=0.1) == 2
    assert default_threads(cores=2, load=0.9) == 1  # another process keeps a core busy
    assert default_threads(cores=2, load=5.0) == 1  # never below one
    assert default_threads(cores=16, load=3.4) == 13


def test_physical_cores_counts_hyperthreads_once(tmp_path):
    for cpu, (package, core) in enumerate([(0, 0), (0, 1), (0, 0), (0, 1), (1, 0)]):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores({0, 1, 2, 3, 4}, sysfs=tmp_path) == 3
    assert physical_cores({0, 2}, sysfs=tmp_path) == 1
    assert physical_cores({7}, sysfs=tmp_path) == 1  # no topology: one core per CPU
