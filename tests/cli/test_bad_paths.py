"""Bad paths, folders and names are one clear line before any work starts: missing folders, output folders that are
files, an unreachable Hub (one quick probe, the local cache still used), bad --config, block indices the model does
not have, --sets without a role, CSV files without a prompt column, and --no-progress silencing every bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from cli_inputs import MINIMAL_RECIPE, unused_port

from steering_adapter.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from steering_adapter.utils.paths import looks_like_path


def _recipe(tmp_path: Path, **changes) -> Path:
    data = json.loads(json.dumps(MINIMAL_RECIPE))
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _adapter_folder(tmp_path: Path) -> Path:
    """A folder with an adapter config (enough for the checks that run before the model loads)."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = {"peft_type": "STEERING", "base_model_name_or_path": "steering-adapter:organism", "layers": [3]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment whose Hub endpoint is a closed port and whose HF cache is under ``tmp_path``."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "HF_ENDPOINT": f"http://127.0.0.1:{unused_port()}",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "STEERING_ADAPTER_THREADS": "1",
    }
    return env | extra


def _cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "steering_adapter.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )
    return result, time.monotonic() - started


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]


# -- 1. names that can only be folders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("/no/such/model", True),
        ("./model", True),
        ("../model", True),
        ("~/model", True),
        ("models\\qwen", True),
        ("runs/x/adapter", True),
        ("org/name/", True),
        ("org/na me", True),
        ("org/name", False),
        ("gpt2", False),
        ("Qwen/Qwen3-4B-Instruct-2507", False),
    ],
)
def test_looks_like_path(name, path):
    assert looks_like_path(name) is path


def test_run_with_a_missing_model_folder_is_no_such_folder(tmp_path, capsys, no_model):
    missing = tmp_path / "models" / "qwen"
    recipe = _recipe(tmp_path, model={"name_or_path": str(missing)})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    err = _one_line(capsys)
    assert err == f"error: recipe.model.name_or_path: no such folder '{missing}' (and it cannot be a Hub repo id)"


def test_generate_with_a_missing_adapter_or_model_folder(tmp_path, capsys, no_model):
    missing = str(tmp_path / "adapter")
    assert main(["generate", "--model", "organism", "--adapter", missing, "--prompt", "hi"]) == EXIT_USAGE
    assert _one_line(capsys) == f"error: --adapter: no such folder '{missing}' (and it cannot be a Hub repo id)"
    assert main(["generate", "--model", "./no-such-model", "--prompt", "hi"]) == EXIT_USAGE
    assert _one_line(capsys).startswith("error: --model: no such folder './no-such-model'")
    afile = tmp_path / "weights.bin"
    afile.write_text("x")
    assert main(["chat", "--model", str(afile)]) == EXIT_USAGE
    assert _one_line(capsys) == f"error: --model: {afile} is a file; a model is a folder or a Hub repo id"
    assert main(["generate", "--model", str(tmp_path), "--prompt", "hi"]) == EXIT_USAGE
    expected = f"error: --model: {tmp_path} is a folder without config.json, not a transformers model folder"
    assert _one_line(capsys) == expected


def test_eval_with_a_missing_adapter_folder(tmp_path, capsys, no_model):
    missing = str(tmp_path / "adapter")
    args = ["eval", missing, "--sets", "p=organism:political:target", "--out", str(tmp_path / "eval")]
    assert main(args) == EXIT_USAGE
    assert _one_line(capsys) == f"error: eval ADAPTER: no such folder '{missing}' (and it cannot be a Hub repo id)"
    os.mkdir(missing)  # a folder, but not an adapter's
    assert main(args) == EXIT_USAGE
    assert _one_line(capsys) == f"error: eval ADAPTER: adapter_config.json not found in adapter folder {missing}"


def test_a_hub_id_the_hub_does_not_have_is_one_line(local_hub, monkeypatch, capsys, no_model):
    from steering_adapter.adapter import hub_access

    monkeypatch.setattr(hub_access, "PROBE_MEMORY_SECONDS", 0.0)  # probe the local Hub, whatever ran before
    repo = f"steering-org/missing-{uuid.uuid4().hex[:8]}"
    assert main(["generate", "--model", "organism", "--adapter", repo, "--prompt", "hi"]) == EXIT_USAGE
    err = _one_line(capsys)
    assert err.startswith(f"error: --adapter: '{repo}' is not a local folder and the Hub at ")
    assert "has no such repo" in err


# -- 2. an unreachable Hub: one probe, one line, the cache still used -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--model", "org/unknown-model", "--prompt", "hi"],
        ["generate", "--model", "organism", "--adapter", "org/unknown-adapter", "--prompt", "hi"],
    ],
    ids=["model", "adapter"],
)
def test_unreachable_hub_is_one_line_at_once(tmp_path, args):
    env = _offline_env(tmp_path)
    result, seconds = _cli(args, env)
    assert result.returncode == EXIT_ERROR, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    option = "--model" if "org/unknown-model" in args else "--adapter"
    assert lines[0].startswith(f"error: {option}: 'org/unknown-") and "cannot be reached at " in lines[0]
    assert env["HF_ENDPOINT"] in lines[0] and "HF_ENDPOINT" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "Retrying" not in result.stderr and seconds < 60, (seconds, result.stderr)


def test_offline_mode_without_a_cached_copy_is_one_line(tmp_path):
    recipe = _recipe(tmp_path, model={"name_or_path": "org/unknown-model"})
    result, _ = _cli(["memory", str(recipe)], _offline_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert result.returncode == EXIT_ERROR, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: recipe.model.name_or_path: 'org/unknown-model' is not a local folder")
    assert "HF_HUB_OFFLINE is set" in lines[0]


def test_cached_model_and_adapter_load_while_the_hub_is_unreachable(local_hub, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    from steering_adapter import adapter_from_vectors, push_adapter, save_adapter
    from steering_adapter.models.organism import ORGANISM_DIR, load_organism

    api = HfApi()
    model_repo, adapter_repo = (f"steering-org/{kind}-{uuid.uuid4().hex[:8]}" for kind in ("model", "adapter"))
    api.create_repo(model_repo)
    api.upload_folder(
        folder_path=ORGANISM_DIR,
        repo_id=model_repo,
        allow_patterns=["config.json", "generation_config.json", "model.safetensors", "tokenizer*", "*.jinja"],
    )
    model, _ = load_organism()
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    folder = save_adapter(adapter_from_vectors(model, {3: vector}, scale=-1.0), tmp_path / "adapter")
    push_adapter(folder, adapter_repo)
    for repo in (model_repo, adapter_repo):
        snapshot_download(repo, cache_dir=tmp_path / "hub")

    args = ["generate", "--model", model_repo, "--adapter", adapter_repo, "--prompt", "hi", "--max-new-tokens", "3"]
    result, seconds = _cli([*args, "--no-progress"], _offline_env(tmp_path))
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(">>> hi\n[steered] ")
    assert "Retrying" not in result.stderr and seconds < 60, (seconds, result.stderr)


# -- 3. output folders that are files -------------------------------------------------------------------------------


def test_run_out_that_is_a_file(tmp_path, capsys, no_model):
    recipe = _recipe(tmp_path)
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    assert main(["run", str(recipe), "--out", str(afile)]) == EXIT_USAGE
    assert _one_line(capsys) == f"error: --out: {afile} is an existing file, not a folder; give a folder to write into"
    assert main(["run", str(recipe), "--set", f"output.dir={afile}/sub"]) == EXIT_USAGE
    assert _one_line(capsys) == f"error: recipe.output.dir: cannot create folder {afile}/sub: {afile} is a file"


def test_eval_out_that_is_a_file(tmp_path, capsys, no_model):
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    args = ["eval", str(tmp_path / "adapter"), "--sets", "p=organism:political:target", "--out", str(afile)]
    (tmp_path / "adapter").mkdir()
    assert main(args) == EXIT_USAGE
    assert _one_line(capsys).startswith(f"error: --out: {afile} is an existing file, not a folder")


# -- 4. memory --config ---------------------------------------------------------------------------------------------


def test_memory_config_that_is_not_a_config(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    config = tmp_path / "config.json"
    config.write_text("model_type: llama\n")
    assert main(["memory", str(recipe), "--config", str(config)]) == EXIT_USAGE
    assert _one_line(capsys) == f"error: --config: {config} is not valid JSON: Expecting value (line 1, column 1)"
    config.write_text(json.dumps({"model_type": "no-such-architecture"}))
    assert main(["memory", str(recipe), "--config", str(tmp_path)]) == EXIT_USAGE
    err = _one_line(capsys)
    assert err.startswith(f"error: --config: {config}: model_type 'no-such-architecture' is not one transformers")
    assert main(["memory", str(recipe), "--config", str(tmp_path / "missing.json")]) == EXIT_USAGE
    assert _one_line(capsys).startswith(f"error: --config: {tmp_path / 'missing.json'} does not exist")


# -- 5. block indices the model does not have -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "gating={mode: 'on', negative: ['organism:harmful'], layers: [0, 1, 12]}",
            "error: recipe.gating.layers[2]: block 12 does not exist; organism has 6 blocks (valid: 0 to 5)",
        ),
        (
            "estimator.layers=[3, -1]",
            "error: recipe.estimator.layers[1]: block -1 does not exist; organism has 6 blocks (valid: 0 to 5)",
        ),
    ],
    ids=["gating", "estimator"],
)
def test_block_indices_are_checked_when_the_model_loads(tmp_path, capsys, monkeypatch, override, message):
    def refuse(*args, **kwargs):
        raise AssertionError("scoring started before the layers were checked")

    monkeypatch.setattr("steering_adapter.run.pipeline.estimate_directions", refuse)
    monkeypatch.setattr("steering_adapter.run.pipeline.build_judge", refuse)
    recipe = _recipe(tmp_path)
    args = ["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress", "--set", override]
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == message


# -- 6. --sets without a role ---------------------------------------------------------------------------------------


def test_sets_without_a_role_shows_the_syntax(tmp_path, capsys, no_model):
    base = ["eval", str(_adapter_folder(tmp_path)), "--out", str(tmp_path / "eval"), "--sets"]
    assert main([*base, "political=organism:political"]) == EXIT_USAGE
    err = _one_line(capsys)
    assert err.startswith("error: --sets 'political=organism:political': 'political' is not a role")
    assert "NAME=SOURCE:ROLE, e.g. political=organism:political:target" in err
    assert "target, harmful, benign, other" in err and "jbb_harmful" in err and "organism:<category or topic>" in err
    assert main([*base, "p=organism:target"]) == EXIT_USAGE
    assert "'organism' names no prompts: use organism:<category or topic>" in _one_line(capsys)


# -- 7. the prompt column of CSV files ------------------------------------------------------------------------------


def _question_csv(tmp_path: Path) -> Path:
    path = tmp_path / "questions.csv"
    path.write_text("id,question\n1,What is two plus two?\n2,Name a colour.\n3,How do birds fly?\n")
    return path


def test_recipe_prompts_column_names_the_csv_column(tmp_path, capsys, no_model):
    questions = _question_csv(tmp_path)
    prompts = dict(MINIMAL_RECIPE["prompts"], compliance=["organism:benign", str(questions)])
    recipe = _recipe(tmp_path, prompts=prompts)
    out = ["--out", str(tmp_path / "out")]
    assert main(["run", str(recipe), *out]) == EXIT_USAGE
    err = _one_line(capsys)
    assert err.startswith(f"error: recipe.prompts.compliance[1]: {questions}: no 'prompt' column")
    assert "name the prompt column with recipe.prompts.column (one of ['id', 'question'])" in err
    with pytest.raises(AssertionError, match="the model was loaded"):  # the sources pass; the run reaches the model
        main(["run", str(recipe), *out, "--no-memory-check", "--set", "prompts.column=question"])


def test_eval_column_names_the_csv_column(tmp_path, capsys, no_model):
    questions = _question_csv(tmp_path)
    args = ["eval", str(_adapter_folder(tmp_path)), "--sets", f"q={questions}:benign", "--out", str(tmp_path / "eval")]
    assert main(args) == EXIT_USAGE
    assert "no 'prompt' column; name the prompt column with --column" in _one_line(capsys)
    with pytest.raises(AssertionError, match="the model was loaded"):
        main([*args, "--column", "question"])
    assert capsys.readouterr().out.startswith("[eval] scoring 3 prompts (all): q 3 (benign)")


# -- 8. --no-progress -----------------------------------------------------------------------------------------------


def test_no_progress_hides_every_bar(tmp_path):
    from steering_adapter import adapter_from_vectors, save_adapter
    from steering_adapter.models.organism import load_organism

    model, _ = load_organism()
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    adapter = save_adapter(adapter_from_vectors(model, {3: vector}, scale=-1.0), tmp_path / "adapter")
    args = ["eval", adapter, "--sets", "p=organism:political:target", "--sample", "2", "--k", "1"]
    args += ["--max-new-tokens", "2", "--no-relevance", "--out", str(tmp_path / "eval"), "--no-progress"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_HUB_DISABLE_PROGRESS", "TQDM"))}
    result, _ = _cli(args, env | {"OMP_NUM_THREADS": "1", "STEERING_ADAPTER_THREADS": "1"})
    assert result.returncode == EXIT_OK, result.stderr
    assert "Loading weights" not in result.stderr and "it/s]" not in result.stderr and "%|" not in result.stderr, (
        result.stderr
    )
