"""Bad adapter folders and bad ``--out`` targets on the command line: one line naming the problem, exit code 2.

The folders are saved with the library and then broken by hand (safetensors / JSON edits, no library code), so
each test checks the verdict against what was written; ``push`` must refuse before any network call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_inputs import edit_config, unused_port
from safetensors.torch import load_file, save_file
from tiny import tiny_model

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.cli import EXIT_OK, EXIT_USAGE, main
from steering_adapter.runtimes.export import export_adapter

pytestmark = pytest.mark.usefixtures("single_thread")

HIDDEN = 64  # tiny_model's default hidden size
VECTOR_2 = "base_model.model.model.layers.2.steering_vector"


@pytest.fixture
def adapter(tmp_path) -> Path:
    """A valid saved adapter (layers 1 and 2 of the tiny Llama, scale -3)."""
    generator = torch.Generator().manual_seed(3)
    vectors = {layer: torch.randn(HIDDEN, generator=generator) for layer in (1, 2)}
    return Path(save_adapter(adapter_from_vectors(tiny_model("llama"), vectors, scale=-3.0), tmp_path / "adapter"))


def _put_nan(folder: Path) -> None:
    tensors = load_file(folder / "adapter_model.safetensors")
    tensors[VECTOR_2][7] = float("nan")
    save_file(tensors, folder / "adapter_model.safetensors")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err


# ------------------------------------------------------------------------------------------------------- push


@pytest.mark.parametrize("breakage", ["nan", "extra_tensor"])
def test_push_refuses_a_bad_safetensors_file_before_reaching_the_hub(adapter, breakage):
    """HF_ENDPOINT is a closed port: a validation error, not a connection error, proves nothing was sent first."""
    if breakage == "nan":
        _put_nan(adapter)
        fragment = "steering vector for layer 2 contains NaN or Inf"
    else:
        tensors = load_file(adapter / "adapter_model.safetensors")
        tensors["base_model.model.model.layers.3.steering_vector"] = torch.randn(HIDDEN)
        save_file(tensors, adapter / "adapter_model.safetensors")
        fragment = "do not belong to the configured layers [1, 2]"
    endpoint = f"http://127.0.0.1:{unused_port()}"
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_dummy", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "steering_adapter.cli", "push", str(adapter), "org/adapter"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0] and str(adapter) in lines[0], lines[0]
    assert "cannot reach the Hub" not in result.stderr


# ---------------------------------------------------------------------------------------------------- inspect


def test_inspect_check_says_ok_for_a_valid_adapter(adapter, capsys):
    assert main(["inspect", str(adapter), "--check"]) == EXIT_OK
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("ok: layers [1, 2], mode add, scale -3"), out[-1]
    assert json.loads("\n".join(out[:-1]))["layers"] == [1, 2]  # the config is still printed above the verdict


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        ("nan", "steering vector for layer 2 contains NaN or Inf"),
        ("mode", "unknown steering mode 'multiply'"),
        ("misspelt_key", "unknown key 'scael' (did you mean 'scale'?)"),
        ("zero_ablation", f"{VECTOR_2!r} (block 2) is zero or too small to define a direction"),
    ],
    ids=["nan", "mode", "misspelt_key", "zero_ablation"],
)
def test_inspect_verdict_on_a_bad_adapter(adapter, capsys, breakage, fragment):
    if breakage == "nan":
        _put_nan(adapter)
    elif breakage == "mode":
        edit_config(adapter, mode="multiply")
    elif breakage == "misspelt_key":
        edit_config(adapter, scael=-2.7, scale=None)
    else:
        edit_config(adapter, mode="ablate")
        tensors = load_file(adapter / "adapter_model.safetensors")
        tensors[VECTOR_2] = torch.full((HIDDEN,), 1e-30)
        save_file(tensors, adapter / "adapter_model.safetensors")

    # without --check: the config, then a verdict line that says what every loader refuses (exit 0)
    assert main(["inspect", str(adapter)]) == EXIT_OK
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("invalid: ") and fragment in last and str(adapter) in last, last

    # with --check: the same problem as the one error line, exit 2
    assert main(["inspect", str(adapter), "--check"]) == EXIT_USAGE
    err = _one_error_line(capsys)
    assert fragment in err and str(adapter) in err, err


# ----------------------------------------------------------------------------------------------------- export


@pytest.fixture
def no_export_work(monkeypatch):
    """Fail the test if the export starts reading the adapter or the base model (the --out check comes first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the export started before --out was checked")

    monkeypatch.setattr("steering_adapter.cli.adapter_commands.export_adapter", refuse)
    monkeypatch.setattr("steering_adapter.runtimes.export.read_steering_adapter", refuse)


@pytest.mark.parametrize("export_format", ["lora", "merged"])
def test_export_to_an_existing_file_where_a_folder_goes(adapter, tmp_path, capsys, no_export_work, export_format):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    assert main(["export", str(adapter), "--format", export_format, "--out", str(target)]) == EXIT_USAGE
    err = _one_error_line(capsys)
    assert err == (
        f"error: --out {target} is an existing file, but the {export_format} export writes a folder: give a folder "
        "path"
    ), err
    assert target.read_text() == "keep me"


def test_export_gguf_to_an_existing_folder(adapter, tmp_path, capsys, no_export_work):
    target = tmp_path / "folder"
    target.mkdir()
    assert main(["export", str(adapter), "--format", "gguf", "--out", str(target)]) == EXIT_USAGE
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --out {target} is an existing folder, but the gguf export writes one .gguf file")


@pytest.mark.parametrize("export_format", ["gguf", "lora"])
def test_export_inside_an_existing_file(adapter, tmp_path, capsys, no_export_work, export_format):
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "sub" / "out.gguf"
    assert main(["export", str(adapter), "--format", export_format, "--out", str(target)]) == EXIT_USAGE
    expected = f"error: --out {target}: {blocker} is a file, so nothing can be written inside it"
    assert _one_error_line(capsys) == expected


def test_export_adapter_checks_out_before_reading(adapter, tmp_path, no_export_work):
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(ValueError, match=r"^out .* is an existing file, but the lora export writes a folder"):
        export_adapter(adapter, "lora", target)


def test_export_refuses_what_a_loader_refuses(adapter, tmp_path, capsys):
    edit_config(adapter, scael=-2.7, scale=None)
    assert main(["export", str(adapter), "--format", "lora", "--out", str(tmp_path / "lora")]) == EXIT_USAGE
    err = _one_error_line(capsys)
    assert f"{adapter}/adapter_config.json" in err and "unknown key 'scael' (did you mean 'scale'?)" in err, err
    assert not (tmp_path / "lora").exists()
