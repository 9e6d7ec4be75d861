"""GGUF control vectors: the file layout llama.cpp reads, provenance, refusals, and import (round trip, bad files).

The runtime agreement with llama.cpp itself is in tests/runtimes/test_export_llamacpp.py.
"""

from __future__ import annotations

import hashlib
import json

import gguf
import numpy as np
import pytest
import torch
from export_cases import (
    LAYER_SCALES,
    LAYERS,
    SCALE,
    input_ids,
    save_base_and_adapter,
    tiny_base,
    write_control_vector,
)
from peft import PeftModel
from reference import block_output
from safetensors.numpy import load_file as load_numpy

from steering_adapter.cli import main as cli_main
from steering_adapter.runtimes.export import NotExpressibleError, export_adapter, import_gguf

pytestmark = pytest.mark.usefixtures("single_thread")

HIDDEN = 32


@pytest.fixture(scope="module")
def llama_adapter(tmp_path_factory):
    """(base folder, adapter folder) of a tiny Llama steered at blocks 1 and 3."""
    base_dir, adapter_dir, _ = save_base_and_adapter("llama", tmp_path_factory.mktemp("gguf-llama"))
    return base_dir, adapter_dir


def tensors_of(path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, tuple(int(s) for s in t.shape), t.data.tobytes()) for t in reader.tensors}


def test_export_writes_the_llama_cpp_control_vector_layout(llama_adapter, tmp_path):
    base_dir, adapter_dir = llama_adapter
    out = export_adapter(adapter_dir, "gguf", tmp_path / "steer.gguf")
    reader = gguf.GGUFReader(str(out))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == len(LAYERS)
    # direction.{i} = scale * s_i * v_i, float32, computed here in numpy from the adapter's own file
    stored = load_numpy(adapter_dir / "adapter_model.safetensors")
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == [f"direction.{layer}" for layer in LAYERS]
    for layer in LAYERS:
        tensor = tensors[f"direction.{layer}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and tuple(tensor.shape) == (HIDDEN,)
        vector = stored[f"base_model.model.model.layers.{layer}.steering_vector"].astype(np.float32)
        expected = vector * np.float32(SCALE * float(LAYER_SCALES.get(str(layer), 1.0)))
        np.testing.assert_array_equal(np.asarray(tensor.data), expected)
    provenance = json.loads(fields["steering_adapter.provenance"])
    assert provenance["base_model"] == str(base_dir) and provenance["layers"] == list(LAYERS)
    assert provenance["scale"] == SCALE and provenance["vector_units"] == "class_separation"
    assert (
        provenance["source_sha256"]["adapter_model.safetensors"]
        == hashlib.sha256((adapter_dir / "adapter_model.safetensors").read_bytes()).hexdigest()
    )


def test_block_zero_cannot_be_exported(tmp_path):
    _, adapter_dir, _ = save_base_and_adapter("llama", tmp_path, vectors={0: torch.ones(HIDDEN)}, layer_scales=None)
    with pytest.raises(NotExpressibleError, match="block 0"):
        export_adapter(adapter_dir, "gguf", tmp_path / "zero.gguf")


def test_round_trip_gguf_adapter_gguf_is_byte_identical(llama_adapter, tmp_path):
    base_dir, adapter_dir = llama_adapter
    first = export_adapter(adapter_dir, "gguf", tmp_path / "first.gguf")
    imported = import_gguf(first, str(base_dir), tmp_path / "imported")
    second = export_adapter(imported, "gguf", tmp_path / "second.gguf")
    assert tensors_of(first) == tensors_of(second)
    config = json.loads((imported / "adapter_config.json").read_text())
    assert config["peft_type"] == "STEERING" and config["scale"] == 1.0 and config["layers"] == list(LAYERS)
    source = config["steering_metadata"]["imported_from"]
    assert source["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert source["export_provenance"]["scale"] == SCALE  # the original adapter's provenance travels along
    assert (imported / "README.md").is_file()


def test_imported_direction_n_steers_the_output_of_block_n(tmp_path):
    """A repeng-style file: direction.N is added to block N's output (llama.cpp's placement), nothing earlier."""
    base_dir = tmp_path / "base"
    tiny_base("llama").save_pretrained(base_dir)
    generator = np.random.default_rng(0)
    directions = {2: generator.standard_normal(HIDDEN).astype(np.float32)}
    path = write_control_vector(tmp_path / "repeng.gguf", {"direction.2": directions[2]})
    imported = import_gguf(path, str(base_dir), tmp_path / "adapter", scale=1.0)
    second = export_adapter(imported, "gguf", tmp_path / "again.gguf")
    assert tensors_of(second)["direction.2"][2] == tensors_of(path)["direction.2"][2]
    base, ids = tiny_base("llama"), input_ids()
    expected = block_output(base, 2, ids) + torch.from_numpy(directions[2])
    before = block_output(base, 1, ids)
    steered = PeftModel.from_pretrained(tiny_base("llama"), str(imported))
    torch.testing.assert_close(block_output(steered.base_model.model, 2, ids), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(block_output(steered.base_model.model, 1, ids), before, atol=0, rtol=0)


@pytest.mark.parametrize(
    "tensors, architecture, message",
    [
        ({"direction.0": np.ones(HIDDEN, np.float32)}, "controlvector", "direction.0 is invalid"),
        ({"direction.1": np.ones(HIDDEN + 8, np.float32)}, "controlvector", "n_embd=40 but the base model"),
        ({"direction.1": np.ones(HIDDEN, np.float16)}, "controlvector", "F16, control vectors must be F32"),
        ({"direction.1": np.ones(HIDDEN, np.float32)}, "llama", "general.architecture is 'llama'"),
        ({"direction.4": np.ones(HIDDEN, np.float32)}, "controlvector", "direction.4 is beyond the depth"),
        ({"direction.1": np.ones((2, HIDDEN), np.float32)}, "controlvector", "expected 1-D"),
        ({"layer.1": np.ones(HIDDEN, np.float32)}, "controlvector", "not a control-vector direction"),
        ({"direction.1": np.full(HIDDEN, np.nan, np.float32)}, "controlvector", "NaN or Inf"),
        (
            {"direction.1": np.ones(HIDDEN, np.float32), "direction.2": np.ones(8, np.float32)},
            "controlvector",
            "8 values, the other directions 32",
        ),
        ({}, "controlvector", "holds no direction tensors"),
    ],
)
def test_import_refuses_bad_control_vectors(llama_adapter, tmp_path, tensors, architecture, message):
    base_dir, _ = llama_adapter
    path = write_control_vector(tmp_path / "bad.gguf", tensors, architecture)
    with pytest.raises(ValueError, match=message):
        import_gguf(path, str(base_dir), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_adds_up_tensors_of_the_same_layer_like_llama_cpp(llama_adapter, tmp_path):
    base_dir, _ = llama_adapter
    one, two = np.full(HIDDEN, 0.25, np.float32), np.full(HIDDEN, 0.5, np.float32)
    path = write_control_vector(tmp_path / "twice.gguf", {"direction.1": one, "direction.01": two})
    imported = import_gguf(path, str(base_dir), tmp_path / "adapter")
    vectors = load_numpy(imported / "adapter_model.safetensors")
    np.testing.assert_array_equal(vectors["base_model.model.model.layers.1.steering_vector"], one + two)


def test_import_refuses_a_file_that_is_not_gguf(llama_adapter, tmp_path):
    base_dir, _ = llama_adapter
    path = tmp_path / "vector.gguf"
    path.write_text("not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        import_gguf(path, str(base_dir), tmp_path / "out")


def test_cli_export_and_import_gguf(llama_adapter, tmp_path, capsys):
    base_dir, adapter_dir = llama_adapter
    out = tmp_path / "cli.gguf"
    assert cli_main(["export", str(adapter_dir), "--format", "gguf", "--out", str(out)]) == 0
    assert cli_main(["import-gguf", str(out), "--base", str(base_dir)]) == 0
    assert (tmp_path / "cli-steering-adapter" / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    bad = write_control_vector(tmp_path / "zero.gguf", {"direction.0": np.ones(HIDDEN, np.float32)})
    assert cli_main(["import-gguf", str(bad), "--base", str(base_dir), "--out", str(tmp_path / "x")]) == 2
    assert "direction.0 is invalid" in capsys.readouterr().err
