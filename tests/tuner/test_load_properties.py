"""Property test: generated adapter folders, broken and valid, through every loading flow.

Every broken folder must be refused at load time by every flow with a ``ValueError`` that names the adapter's folder
and the problem; every valid folder must load through every flow and steer exactly like the hand-written hook
reference (tests/helpers/reference.py), condition gate included. Folders are written from the format contract only
(docs/adapter-format.md), never with library code.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import MISSING, dataclass, field, fields

import pytest
import torch
from architectures import BLOCK_PATHS, HIDDEN, LAYERS, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import AutoPeftModelForCausalLM, PeftConfig, PeftModel
from reference import block_output, contract_hooks
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import steering_adapter  # registers STEERING, installs the load checks
from steering_adapter.adapter.composition import load_composition
from steering_adapter.tuner.layer import SteeringLayer

pytestmark = pytest.mark.usefixtures("single_thread")

ARCHS = ("llama", "gpt2", "qwen3")
IDS = torch.tensor([[5, 17, 42, 9, 33, 70, 3], [8, 8, 120, 64, 1, 2, 99]])
ATOL = 1e-5
# Generated folders per run (LOAD_EXAMPLES shortens a local run; CI uses the default).
EXAMPLES = int(os.environ.get("LOAD_EXAMPLES", 1000))
AUTO_EXAMPLES = int(os.environ.get("LOAD_AUTO_EXAMPLES", 150))

# breakage -> a fragment every flow's error must contain
BREAKAGES = {
    "nan": "contains NaN or Inf",
    "inf": "contains NaN or Inf",
    "missing_vector": "missing steering vector",
    "extra_vector": "do not belong to the configured layers",
    "short_vector": "has shape",
    "long_vector": "has shape",
    "matrix_vector": "has shape",
    "int_vector": "dtype torch.int32",
    "unknown_mode": "unknown steering mode",
    "unknown_positions": "unknown positions",
    "layer_out_of_range": "unknown layer index",
    "negative_layer": "non-negative ints",
    "layers_not_a_list": "must be a list",
    "nan_scale": "scale must be a finite number",
    "condition_tensor_without_fields": "no condition_layer",
    "condition_fields_without_tensor": "has no condition tensor",
    "zero_condition": "is zero",
    "int_condition": "dtype torch.int64",
    "unexpected_tensor": "unexpected tensor",
    "hidden_size_of_another_model": "hidden_size=48",
    "depth_of_another_model": "num_hidden_layers=6",
    "invalid_json": "is not valid JSON",
    "json_not_an_object": "must hold a JSON object",
    "pickle_only": "safetensors only",
    "misspelt_key": "unknown key 'scael' (did you mean 'scale'?)",
    "zero_ablation": "too small to define a direction",
    "tiny_ablation": "too small to define a direction",
}


KINDS = [None] * 20 + sorted(BREAKAGES) * 2


@dataclass
class AdapterSpec:
    arch: str
    layers: list[int]
    mode: str
    scale: float
    layer_scales: dict[str, float] | None
    seed: int
    gate: dict | None  # {"layer", "comparator", "position", "offset"}
    breakage: str | None
    config: dict = field(default_factory=dict)


@st.composite
def adapter_specs(draw) -> AdapterSpec:
    arch = draw(st.sampled_from(ARCHS))
    layers = sorted(draw(st.sets(st.integers(0, LAYERS - 1), min_size=1, max_size=3)))
    scales = None
    if draw(st.booleans()):
        scales = {str(layer): draw(st.integers(-20, 20)) / 10 for layer in layers if draw(st.booleans())} or None
    gate = None
    if draw(st.booleans()):
        gate = {
            "layer": draw(st.integers(0, min(layers))),
            "comparator": draw(st.sampled_from(["greater", "less"])),
            "position": draw(st.sampled_from(["last", "mean"])),
            "offset": draw(st.sampled_from([-1.0, 0.0, 1.0])),  # threshold below / between / above the prompts
        }
    # about three valid folders in ten, the rest spread over every breakage kind
    breakage = draw(st.sampled_from(KINDS))
    if breakage == "condition_fields_without_tensor" or breakage == "zero_condition" or breakage == "int_condition":
        gate = gate or {"layer": min(layers), "comparator": "greater", "position": "last", "offset": 0.0}
    if breakage == "condition_tensor_without_fields":
        gate = None
    if breakage == "extra_vector" and len(layers) == LAYERS:
        layers = layers[1:]
    return AdapterSpec(
        arch=arch,
        layers=layers,
        mode=draw(st.sampled_from(["add", "ablate"])),
        scale=draw(st.integers(-40, 40)) / 10,
        layer_scales=scales,
        seed=draw(st.integers(0, 2**16)),
        gate=gate,
        breakage=breakage,
    )


_PRISTINE: dict[str, torch.nn.Module] = {}
_SAVED: dict[str, str] = {}


def pristine(arch: str) -> torch.nn.Module:
    if arch not in _PRISTINE:
        _PRISTINE[arch] = tiny_model(arch)
    return _PRISTINE[arch]


def fresh(arch: str) -> torch.nn.Module:
    return copy.deepcopy(pristine(arch))


def saved_base(arch: str, root: str) -> str:
    """The pristine model saved to disk, so adapters can name it as their base model (Auto* flows)."""
    if arch not in _SAVED:
        path = os.path.join(root, f"base-{arch}")
        pristine(arch).save_pretrained(path)
        _SAVED[arch] = path
    return _SAVED[arch]


def projections(arch: str, layer: int, condition: torch.Tensor, position: str) -> torch.Tensor:
    """Projection of block ``layer``'s output (last token or prompt mean) on the unit condition, per prompt."""
    hidden = block_output(pristine(arch), layer, IDS, BLOCK_PATHS[arch])
    pooled = hidden[:, -1] if position == "last" else hidden.mean(dim=1)
    return pooled.float() @ (condition / condition.norm())


def write_adapter(spec: AdapterSpec, folder: str, base: str | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Write the adapter folder of ``spec`` (its breakage applied); return (config, tensors) of the valid form."""
    generator = torch.Generator().manual_seed(spec.seed)
    path = BLOCK_PATHS[spec.arch]
    vectors = {layer: torch.randn(HIDDEN, generator=generator) for layer in spec.layers}
    tensors = {f"base_model.model.{path}.{layer}.steering_vector": v for layer, v in vectors.items()}
    config = {
        "peft_type": "STEERING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "revision": None,
        "layers": list(spec.layers),
        "scale": spec.scale,
        "layer_scales": spec.layer_scales,
        "mode": spec.mode,
        "positions": "all",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
    }
    if spec.gate is not None:
        condition = torch.randn(HIDDEN, generator=generator)
        scores = projections(spec.arch, spec.gate["layer"], condition, spec.gate["position"])
        spread = float((scores.max() - scores.min()).abs()) + 1.0
        config.update(
            condition_layer=spec.gate["layer"],
            condition_threshold=float(scores.mean()) + spec.gate["offset"] * spread,
            condition_comparator=spec.gate["comparator"],
            condition_position=spec.gate["position"],
        )
        tensors[f"base_model.model.{path}.{spec.gate['layer']}.steering_condition"] = condition
    valid = (dict(config), dict(tensors))
    broken = spec.breakage
    first = f"base_model.model.{path}.{spec.layers[0]}.steering_vector"
    condition_key = f"base_model.model.{path}.{spec.gate['layer']}.steering_condition" if spec.gate else None
    if broken in ("nan", "inf"):
        tensors[first] = tensors[first].clone()
        tensors[first][spec.seed % HIDDEN] = float("nan") if broken == "nan" else float("-inf")
    elif broken == "missing_vector":
        del tensors[first]
    elif broken == "extra_vector":
        other = min(set(range(LAYERS)) - set(spec.layers))
        tensors[f"base_model.model.{path}.{other}.steering_vector"] = torch.randn(HIDDEN)
    elif broken in ("short_vector", "long_vector", "matrix_vector"):
        shape = {"short_vector": (HIDDEN - 1,), "long_vector": (HIDDEN + 3,), "matrix_vector": (1, HIDDEN)}[broken]
        tensors[first] = torch.randn(shape)
    elif broken == "int_vector":
        tensors[first] = torch.arange(HIDDEN, dtype=torch.int32)
    elif broken == "unknown_mode":
        config["mode"] = "multiply"
    elif broken == "unknown_positions":
        config["positions"] = "last"
    elif broken == "layer_out_of_range":
        config["layers"] = [*spec.layers, LAYERS + 2]
        tensors[f"base_model.model.{path}.{LAYERS + 2}.steering_vector"] = torch.randn(HIDDEN)
    elif broken == "negative_layer":
        config["layers"] = [-1, *spec.layers]
    elif broken == "layers_not_a_list":
        config["layers"] = spec.layers[0]
    elif broken == "nan_scale":
        config["scale"] = float("nan")
    elif broken == "condition_tensor_without_fields":
        tensors[f"base_model.model.{path}.0.steering_condition"] = torch.randn(HIDDEN)
    elif broken == "condition_fields_without_tensor":
        del tensors[condition_key]
    elif broken == "zero_condition":
        tensors[condition_key] = torch.zeros(HIDDEN)
    elif broken == "int_condition":
        tensors[condition_key] = torch.ones(HIDDEN, dtype=torch.int64)
    elif broken == "unexpected_tensor":
        tensors[f"base_model.model.{path}.0.lora_A.weight"] = torch.randn(2, HIDDEN)
    elif broken == "hidden_size_of_another_model":  # a self-consistent adapter for a wider model
        config["hidden_size"] = 48
        tensors = {key: torch.randn(48) for key in tensors}
    elif broken == "depth_of_another_model":
        config["num_hidden_layers"] = 6
    elif broken == "misspelt_key":  # PEFT alone would drop it with a generic warning and steer with scale 1.0
        config["scael"] = config.pop("scale")
    elif broken in ("zero_ablation", "tiny_ablation"):  # 1e-30: its float32 squares underflow, its norm is 0
        config["mode"] = "ablate"
        tensors[first] = torch.zeros(HIDDEN) if broken == "zero_ablation" else torch.full((HIDDEN,), 1e-30)
    os.makedirs(folder, exist_ok=True)
    config_text = json.dumps(config)
    if broken == "invalid_json":
        config_text = config_text[: len(config_text) // 2]
    elif broken == "json_not_an_object":
        config_text = json.dumps([config])
    with open(os.path.join(folder, "adapter_config.json"), "w") as handle:
        handle.write(config_text)
    weights = os.path.join(folder, "adapter_model.safetensors")
    save_file({key: value.contiguous() for key, value in tensors.items()}, weights)
    if broken == "pickle_only":
        os.replace(weights, os.path.join(folder, "adapter_model.bin"))
    return valid


def expected_logits(spec: AdapterSpec, config: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The contract, by hand: forward hooks for the vectors, the gate decided on the unsteered condition block."""
    model, path = pristine(spec.arch), BLOCK_PATHS[spec.arch]
    vectors = {layer: tensors[f"base_model.model.{path}.{layer}.steering_vector"] for layer in spec.layers}
    adapter = {"vectors": vectors, "scale": spec.scale, "layer_scales": spec.layer_scales, "mode": spec.mode}
    with torch.no_grad():
        base = model(IDS).logits
        with contract_hooks(model, path, [adapter]):
            steered = model(IDS).logits
    if spec.gate is None:
        return steered
    condition = tensors[f"base_model.model.{path}.{spec.gate['layer']}.steering_condition"]
    scores = projections(spec.arch, spec.gate["layer"], condition, spec.gate["position"])
    threshold = config["condition_threshold"]
    selected = scores > threshold if spec.gate["comparator"] == "greater" else scores < threshold
    return torch.where(selected.view(-1, 1, 1), steered, base)


def write_composition(adapter: str, folder: str) -> str:
    shutil.copytree(adapter, os.path.join(folder, "parts", "only"))
    manifest = {
        "format": "steering-composition",
        "version": 1,
        "order": "declared",
        "parts": [{"name": "only", "path": "parts/only", "weight": 1.0}],
        "orthogonalize": [],
    }
    with open(os.path.join(folder, "steering_composition.json"), "w") as handle:
        json.dump(manifest, handle)
    return folder


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def untouched(model: torch.nn.Module) -> bool:
    """Nothing of an adapter is attached to ``model`` (a refused load must leave it as it was)."""
    attached = any(isinstance(module, SteeringLayer) for module in model.modules())
    return not attached and not hasattr(model, "peft_config") and not getattr(model, "_hf_peft_config_loaded", False)


def flows(spec: AdapterSpec, folder: str, composition: str, auto: bool):
    """(name, callable(base model) returning the steered model) for every flow under test."""

    def transformers_load_adapter(model):
        model.load_adapter(folder, adapter_name="probe")
        return model

    def peft_from_pretrained(model):
        return PeftModel.from_pretrained(model, folder)

    def peft_load_adapter(model):
        # a valid adapter attached first to a copy: PeftModel.load_adapter adds the one under test beside it
        first = pristine_vectors_adapter(spec.arch, os.path.dirname(composition))
        peft_model = PeftModel.from_pretrained(fresh(spec.arch), first, adapter_name="first")
        try:
            peft_model.load_adapter(folder, adapter_name="probe")
        except ValueError:
            assert list(peft_model.peft_config) == ["first"], "a refused adapter was left attached"
            raise
        peft_model.base_model.set_adapter("probe")
        return peft_model

    def composition_flow(model):
        load_composition(model, composition)
        return model

    result = [
        ("transformers load_adapter", transformers_load_adapter),
        ("PeftModel.from_pretrained", peft_from_pretrained),
        ("PeftModel.load_adapter", peft_load_adapter),
        ("load_composition", composition_flow),
    ]
    if auto:
        result += [
            ("AutoPeftModelForCausalLM", lambda model: AutoPeftModelForCausalLM.from_pretrained(folder)),
            ("AutoModelForCausalLM", lambda model: AutoModelForCausalLM.from_pretrained(folder)),
        ]
    return result


_FIRST: dict[str, str] = {}


def pristine_vectors_adapter(arch: str, root: str) -> str:
    """A valid adapter already attached before the one under test (PeftModel.load_adapter adds a second one)."""
    key = f"{arch}:{root}"
    if key not in _FIRST:
        folder = os.path.join(root, f"first-{arch}")
        spec = AdapterSpec(arch, [1], "add", 0.5, None, 7, None, None)
        write_adapter(spec, folder, None)
        _FIRST[key] = folder
    return _FIRST[key]


def check_spec(spec: AdapterSpec, root: str, auto: bool, seen: Counter) -> None:
    with tempfile.TemporaryDirectory(dir=root) as work:
        folder = os.path.join(work, "adapter")
        base = saved_base(spec.arch, root) if auto else None
        config, tensors = write_adapter(spec, folder, base)
        composition = write_composition(folder, os.path.join(work, "composition"))
        for name, load in flows(spec, folder, composition, auto):
            if spec.breakage is not None:
                model = pristine(spec.arch)  # refused before anything is attached, so it stays pristine
                with pytest.raises(ValueError) as caught:
                    load(model)
                message = str(caught.value)
                assert work in message, f"{name} / {spec.breakage}: the error does not name the file: {message}"
                fragment = BREAKAGES[spec.breakage]
                assert fragment in message, f"{name} / {spec.breakage}: {fragment!r} not in {message!r}"
                assert untouched(model), f"{name} / {spec.breakage}: the refused load changed the model"
            else:
                model = load(fresh(spec.arch))
                expected = expected_logits(spec, config, tensors)
                torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=1e-5, msg=f"{name}: {spec}")
            seen[name] += 1
        seen[spec.breakage or "valid"] += 1


def run_generated(root: str, examples: int, auto: bool) -> Counter:
    """Check ``examples`` generated folders (reproducible: derandomized, no example database)."""
    seen: Counter = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spec=adapter_specs())
    def check(spec):
        check_spec(spec, root, auto=auto, seen=seen)

    check()
    kinds = {kind: seen[kind] for kind in ["valid", *sorted(BREAKAGES)]}
    print(f"generated adapter folders ({'with' if auto else 'without'} the Auto classes): {kinds}")
    return seen


def test_generated_adapters_through_every_flow(tmp_path_factory):
    """1,000 generated folders through load_adapter, PeftModel (from_pretrained and load_adapter), composition."""
    seen = run_generated(str(tmp_path_factory.mktemp("generated")), EXAMPLES, auto=False)
    examples = seen["valid"] + sum(seen[b] for b in BREAKAGES)
    assert examples >= EXAMPLES, seen
    assert seen["valid"] >= EXAMPLES // 10, seen
    assert all(seen[breakage] >= max(1, EXAMPLES // 300) for breakage in BREAKAGES), seen  # every kind, often


def test_generated_adapters_through_the_auto_classes(tmp_path_factory):
    """The flows that load the base model named by the adapter (AutoPeftModelForCausalLM, AutoModelForCausalLM)."""
    root = str(tmp_path_factory.mktemp("generated-auto"))
    seen = run_generated(root, AUTO_EXAMPLES, auto=True)
    assert seen["AutoModelForCausalLM"] >= AUTO_EXAMPLES and seen["valid"] >= AUTO_EXAMPLES // 10, seen
    # and every breakage kind at least once more through these flows, whatever the generator drew
    gate = {"layer": 1, "comparator": "greater", "position": "mean", "offset": 0.0}
    for index, breakage in enumerate(sorted(BREAKAGES)):
        gated = breakage in ("condition_fields_without_tensor", "zero_condition", "int_condition")
        spec = AdapterSpec(ARCHS[index % 3], [1, 2], "add", 1.5, None, index, gate if gated else None, breakage)
        check_spec(spec, root, auto=True, seen=seen)
    assert all(seen[breakage] >= 1 for breakage in BREAKAGES), seen


# ----------------------------------------------------------------------------------------------------------------
# The findings of "every bad input gets one clear line", each through PeftModel.from_pretrained and load_adapter
# ----------------------------------------------------------------------------------------------------------------


def _refusal(load, folder: str) -> str:
    """The one-line message of a refused load of ``folder`` through ``load`` (a pristine model stays untouched)."""
    model = pristine("llama")
    with pytest.raises(ValueError) as caught:
        load(model, folder)
    message = str(caught.value)
    assert untouched(model), message
    assert len(message.splitlines()) == 1, message
    return message


TWO_FLOWS = [
    pytest.param(lambda model, folder: PeftModel.from_pretrained(model, folder), id="PeftModel.from_pretrained"),
    pytest.param(lambda model, folder: model.load_adapter(folder, adapter_name="probe"), id="model.load_adapter"),
]


@pytest.mark.parametrize("load", TWO_FLOWS)
def test_misspelt_config_key_is_refused_naming_it_and_the_nearest_key(tmp_path, load):
    spec = AdapterSpec("llama", [1, 2], "add", -2.7, None, 3, None, "misspelt_key")
    folder = str(tmp_path / "adapter")
    write_adapter(spec, folder, None)
    with open(os.path.join(folder, "adapter_config.json")) as handle:
        assert json.load(handle)["scael"] == -2.7  # the file as a user would have typed it
    message = _refusal(load, folder)
    assert os.path.join(folder, "adapter_config.json") in message, message
    assert "unknown key 'scael' (did you mean 'scale'?)" in message, message


def test_every_key_peft_writes_for_any_config_is_accepted(tmp_path):
    """PeftConfig's own dataclass fields (read from PEFT, not from this package) stay valid keys."""
    spec = AdapterSpec("llama", [1, 2], "add", -1.5, None, 4, None, None)
    folder = str(tmp_path / "adapter")
    config, tensors = write_adapter(spec, folder, None)
    peft_fields = {item.name: item for item in fields(PeftConfig)}
    assert {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode"} <= set(peft_fields)
    written = dict(config)
    for name, item in peft_fields.items():
        if name not in written:
            written[name] = item.default if item.default is not MISSING else item.default_factory()
    with open(os.path.join(folder, "adapter_config.json"), "w") as handle:
        json.dump(written, handle)
    expected = expected_logits(spec, config, tensors)
    torch.testing.assert_close(logits(PeftModel.from_pretrained(fresh("llama"), folder)), expected, atol=ATOL, rtol=0)
    model = fresh("llama")
    model.load_adapter(folder, adapter_name="probe")
    torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("load", TWO_FLOWS)
@pytest.mark.parametrize("value", [0.0, 1e-30], ids=["zero", "1e-30"])
def test_ablating_a_zero_or_near_zero_vector_is_refused_at_load_naming_file_and_block(tmp_path, load, value):
    spec = AdapterSpec("llama", [1, 3], "ablate", 1.0, None, 5, None, None)
    folder = str(tmp_path / "adapter")
    write_adapter(spec, folder, None)
    weights = os.path.join(folder, "adapter_model.safetensors")
    key = "base_model.model.model.layers.3.steering_vector"
    tensors = {
        "base_model.model.model.layers.1.steering_vector": torch.randn(HIDDEN),
        key: torch.full((HIDDEN,), value),
    }
    save_file(tensors, weights)
    assert float(torch.linalg.vector_norm(tensors[key])) == 0.0  # float32: 1e-30's squares underflow too
    message = _refusal(load, folder)
    assert weights in message and key in message and "block 3" in message, message
    assert "too small to define a direction" in message and "ablate" in message, message


def test_small_but_representable_vectors_still_ablate_exactly(tmp_path):
    """The floor (about 2e-15 here) refuses only what float32 cannot normalise: a 1e-10-scale vector ablates."""
    spec = AdapterSpec("llama", [2], "ablate", 1.0, None, 6, None, None)
    folder = str(tmp_path / "adapter")
    config, tensors = write_adapter(spec, folder, None)
    key = "base_model.model.model.layers.2.steering_vector"
    small = {key: tensors[key] * 1e-10}
    save_file(small, os.path.join(folder, "adapter_model.safetensors"))
    expected = expected_logits(spec, config, tensors)  # ablation depends only on the direction
    torch.testing.assert_close(logits(PeftModel.from_pretrained(fresh("llama"), folder)), expected, atol=ATOL, rtol=0)


def test_a_zero_vector_in_add_mode_still_loads(tmp_path):
    """Adding zero is a no-op, not an error: only ablation needs a direction."""
    spec = AdapterSpec("llama", [1], "add", 3.0, None, 8, None, None)
    folder = str(tmp_path / "adapter")
    write_adapter(spec, folder, None)
    zero = {"base_model.model.model.layers.1.steering_vector": torch.zeros(HIDDEN)}
    save_file(zero, os.path.join(folder, "adapter_model.safetensors"))
    torch.testing.assert_close(logits(PeftModel.from_pretrained(fresh("llama"), folder)), logits(pristine("llama")))


def test_building_an_ablate_adapter_from_a_zero_vector_is_refused_too():
    """adapter_from_vectors / set_vectors apply the same floor: such an adapter is never saved in the first place."""
    with pytest.raises(ValueError, match=r"vector for layer 1 is zero or too small to define a direction"):
        steering_adapter.adapter_from_vectors(fresh("llama"), {1: torch.full((HIDDEN,), 1e-30)}, mode="ablate")
