"""Compositions against the forward-hook reference: declared order, ablate-first, weights, orthogonalisation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from architectures import HIDDEN, tiny_model
from peft import PeftModel
from reference import contract_hooks

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.adapter.composition import load_composition, read_composition, save_composition

IDS = torch.tensor([[5, 17, 42, 9, 33, 70, 3], [8, 8, 120, 64, 1, 2, 99]])


def _vec(seed, layers):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(HIDDEN, generator=generator) for layer in layers}


@pytest.fixture
def parts(tmp_path):
    specs = {
        "a": (_vec(1, [1, 2]), {"scale": 2.0}),
        "b": (_vec(2, [2]), {"mode": "ablate"}),
        "c": (_vec(3, [2, 3]), {"scale": -1.5}),
    }
    folders = {}
    for name, (vectors, fields) in specs.items():
        model = adapter_from_vectors(tiny_model("llama"), vectors, **fields)
        folders[name] = save_adapter(model, tmp_path / name)
    return specs, folders


def _reference(order, specs, weights, overrides=None):
    model = tiny_model("llama")
    adapters = []
    for name in order:
        vectors, fields = specs[name]
        vectors = (overrides or {}).get(name, vectors)
        adapters.append(
            {"vectors": vectors, "scale": fields.get("scale", 1.0) * weights[name], "mode": fields.get("mode", "add")}
        )
    with contract_hooks(model, "model.layers", adapters), torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize(("order", "expected"), [("ablate_first", ["b", "a", "c"]), ("declared", ["a", "b", "c"])])
def test_composition_order_and_weights(tmp_path, parts, order, expected):
    specs, folders = parts
    weights = {"a": 0.5, "b": 1.0, "c": 2.0}
    folder = save_composition(tmp_path / "combo", [(n, folders[n], weights[n]) for n in "abc"], order=order)
    model = tiny_model("llama")
    info = load_composition(model, folder)
    assert info["order"] == expected
    with torch.no_grad():
        got = model(IDS).logits
    torch.testing.assert_close(got, _reference(expected, specs, weights), atol=1e-5, rtol=1e-5)
    # the same unit through PEFT's multi-adapter API
    peft_model = PeftModel.from_pretrained(tiny_model("llama"), f"{folder}/parts/a", adapter_name="a")
    assert load_composition(peft_model, folder)["order"] == expected
    with torch.no_grad():
        torch.testing.assert_close(peft_model(IDS).logits, got, atol=1e-5, rtol=1e-5)


def test_orthogonalisation_and_interference(tmp_path, parts):
    specs, folders = parts
    folder = save_composition(
        tmp_path / "combo", [(n, folders[n], 1.0) for n in "ac"], order="declared", orthogonalize=[("c", "a")]
    )
    model = tiny_model("llama")
    info = load_composition(model, folder)
    a, c = specs["a"][0], specs["c"][0]
    cos = float(np.dot(a[2], c[2]) / np.linalg.norm(a[2]) / np.linalg.norm(c[2]))
    assert info["interference_before"]["a|c"] == {2: pytest.approx(cos, abs=1e-6)}
    assert info["interference_after"]["a|c"][2] == pytest.approx(0.0, abs=1e-6)
    unit = a[2].double().numpy() / np.linalg.norm(a[2].double().numpy())
    c2 = c[2].double().numpy()
    expected_c = {2: torch.tensor(c2 - (c2 @ unit) * unit, dtype=torch.float32), 3: c[3]}
    with torch.no_grad():
        got = model(IDS).logits
    reference = _reference(["a", "c"], specs, {"a": 1.0, "c": 1.0}, overrides={"c": expected_c})
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_composition_errors(tmp_path, parts):
    _, folders = parts
    with pytest.raises(ValueError, match="unique"):
        save_composition(tmp_path / "x", [("a", folders["a"], 1), ("a", folders["b"], 1)])
    with pytest.raises(ValueError, match="unknown composition order"):
        save_composition(tmp_path / "x", [("a", folders["a"], 1)], order="random")
    with pytest.raises(ValueError, match="must name two parts"):
        save_composition(tmp_path / "x", [("a", folders["a"], 1)], orthogonalize=[("a", "zzz")])
    with pytest.raises(ValueError, match="not a steering adapter folder"):
        save_composition(tmp_path / "x", [("a", tmp_path, 1)])
    with pytest.raises(FileNotFoundError):
        read_composition(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "steering_composition.json").write_text(json.dumps({"format": "other", "version": 1, "parts": []}))
    with pytest.raises(ValueError, match="not a version-1 steering composition"):
        read_composition(bad)


def test_no_spurious_missing_key_report_for_the_other_parts(tmp_path, parts, caplog):
    """transformers calls the vectors of an adapter loaded earlier "MISSING" when the next one loads (every key with
    "steering" in it counts as an adapter key); load_composition drops exactly that report. (Adapter names here are
    not substrings of base-model keys: transformers also matches keys on the adapter name.)"""
    _, folders = parts
    plain = tiny_model("llama")
    with caplog.at_level(logging.WARNING):
        plain.load_adapter(str(folders["a"]), adapter_name="alpha")
        plain.load_adapter(str(folders["c"]), adapter_name="gamma")
    reports = [r.getMessage() for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    assert len(reports) == 1 and "steering_vector.alpha" in reports[0] and "MISSING" in reports[0]  # the quirk
    caplog.clear()
    folder = save_composition(tmp_path / "combo", [("alpha", folders["a"], 1.0), ("gamma", folders["c"], 1.0)])
    with caplog.at_level(logging.WARNING):
        load_composition(tiny_model("llama"), folder)
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]


def test_report_filter_keeps_every_other_report():
    from steering_adapter.adapter.composition import _OtherAdaptersMissingFilter

    def record(rows):
        table = "Key | Status | \n---+---+-\n" + "\n".join(f"{k} | {s} | " for k, s in rows)
        return logging.LogRecord("t", logging.WARNING, "", 0, "M LOAD REPORT from: x\n" + table, None, None)

    keep = _OtherAdaptersMissingFilter(["a"]).filter
    assert not keep(record([("model.layers.{1, 2}.steering_vector.a", "MISSING")]))
    assert keep(record([("model.layers.1.steering_vector.c", "MISSING")]))  # the adapter being loaded: real
    assert keep(record([("model.layers.1.steering_vector.a", "UNEXPECTED")]))
    assert keep(record([("model.layers.1.steering_vector.a", "MISSING"), ("lm_head.weight", "MISMATCH")]))
    assert keep(logging.LogRecord("t", logging.WARNING, "", 0, "something else", None, None))


def _manifest(folder, parts):
    folder.mkdir(parents=True, exist_ok=True)
    document = {"format": "steering-composition", "version": 1, "order": "declared", "parts": parts}
    (folder / "steering_composition.json").write_text(json.dumps(document))
    return folder


def test_part_paths_stay_inside_the_composition_folder(tmp_path, parts):
    _, folders = parts
    outside = str(folders["a"])  # a real adapter folder, outside the composition
    cases = {
        "dotdot": ("../a", "leaves the composition folder"),
        "nested-dotdot": ("parts/../../a", "leaves the composition folder"),
        "absolute": (outside, "is absolute"),
        "empty": ("", "relative folder path"),
    }
    for name, (path, message) in cases.items():
        folder = _manifest(tmp_path / name, [{"name": "a", "path": path, "weight": 1.0}])
        with pytest.raises(ValueError, match=message):
            read_composition(folder)
        with pytest.raises(ValueError, match=message):
            load_composition(tiny_model("llama"), folder)
    # a symlink inside the folder that points out of it
    linked = _manifest(tmp_path / "linked", [{"name": "a", "path": "parts/a", "weight": 1.0}])
    (linked / "parts").mkdir()
    (linked / "parts" / "a").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the composition folder"):
        load_composition(tiny_model("llama"), linked)
    # a part that is not a folder is never looked up on the Hub
    hub_like = _manifest(tmp_path / "hub-like", [{"name": "a", "path": "org/some-adapter", "weight": 1.0}])
    with pytest.raises(ValueError, match="is not a folder.*never Hub repo ids"):
        load_composition(tiny_model("llama"), hub_like)
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="is not a folder"):
        load_composition(model, hub_like)
    assert not hasattr(model, "peft_config")


def test_names_follow_one_rule(tmp_path, parts):
    from steering_adapter import adapter_from_vectors
    from steering_adapter.tuner import check_adapter_name

    _, folders = parts
    for good in ("no_refusal", "a", "Part-2", "x" * 64):
        assert check_adapter_name(good) == good
    for bad in ("", "../x", "a/b", "a.b", "-x", "x" * 65, "steer", "ring_", 3, None):
        with pytest.raises(ValueError, match="adapter name"):
            check_adapter_name(bad)
    with pytest.raises(ValueError, match="invalid adapter name '../evil'"):
        save_composition(tmp_path / "x", [("../evil", folders["a"], 1.0)])
    folder = _manifest(tmp_path / "bad-name", [{"name": "a.b", "path": "parts/a", "weight": 1.0}])
    with pytest.raises(ValueError, match="steering_composition.json: invalid adapter name 'a.b'"):
        read_composition(folder)
    with pytest.raises(ValueError, match="invalid adapter name 'a.b'"):
        tiny_model("llama").load_adapter(str(folders["a"]), adapter_name="a.b")
    with pytest.raises(ValueError, match="invalid adapter name 'steer'"):
        adapter_from_vectors(tiny_model("llama"), {1: torch.randn(HIDDEN)}, adapter_name="steer")
    weightless = _manifest(tmp_path / "bad-weight", [{"name": "a", "path": "parts/a", "weight": "heavy"}])
    with pytest.raises(ValueError, match="weight must be a number"):
        read_composition(weightless)


def test_a_broken_part_attaches_nothing(tmp_path, parts):
    _, folders = parts
    folder = save_composition(tmp_path / "combo", [("a", folders["a"], 1.0), ("c", folders["c"], 1.0)])
    weights = folder / "parts" / "c" / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    key = next(iter(tensors))
    tensors[key][0] = float("nan")
    save_file(tensors, weights)
    model = tiny_model("llama")
    with pytest.raises(
        ValueError, match=r"parts/c/adapter_model.safetensors: steering vector for layer \d contains NaN"
    ):
        load_composition(model, folder)
    assert not hasattr(model, "peft_config")  # part "a" was not attached either
