"""Every bad input gets one clear line: a table of bad inputs across the CLI and the Python load flows.

Each row builds its files under ``tmp_path``, makes one call and names the exit code (CLI) or the exception (Python)
and a regex the one error line must match. A CLI row goes through ``main(argv)`` in this process (stderr through
capsys), or, when the Hub endpoint must be a closed port that huggingface_hub reads at import, through
``python -m steering_adapter.cli`` with that environment. For every row: the exit code, exactly one non-empty
stderr line starting with ``error:``, no traceback, and the regex. The focused tests (tests/cli/test_bad_paths.py,
test_bad_adapter_inputs.py, test_cli_new_user.py, test_recipes_cli.py, tests/tuner/test_load_properties.py) say why
each case matters; this table keeps their count from sliding back.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from cli_inputs import MINIMAL_RECIPE, MODEL_LOADERS, edit_config, refuse_calls, unused_port
from huggingface_hub import constants  # after tests/conftest.py set HF_ENDPOINT; patched per row below
from peft import PeftModel
from safetensors.torch import load_file, save_file
from tiny import tiny_model

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.cli import EXIT_ERROR, EXIT_USAGE, main
from steering_adapter.directions.estimators import MeanDifference

pytestmark = pytest.mark.usefixtures("single_thread")


def _load_properties():
    """tests/tuner/test_load_properties.py (its BREAKAGES and folder writer); tests/tuner is not on sys.path."""
    name = "test_load_properties"  # the name pytest gives it too (rootdir-relative, no __init__.py), so one copy
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "tuner" / "test_load_properties.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


LOAD_PROPERTIES = _load_properties()
BREAKAGES: dict[str, str] = LOAD_PROPERTIES.BREAKAGES

HIDDEN = 64  # tiny_model's default hidden size (the CLI adapters)
VECTOR_2 = "base_model.model.model.layers.2.steering_vector"
# What a row's call must not reach: the model loading, scoring after the layer check, the export's work.
NO_MODEL = MODEL_LOADERS
AFTER_LOAD = ("steering_adapter.run.pipeline.estimate_directions", "steering_adapter.run.pipeline.build_judge")
NO_EXPORT = (
    *NO_MODEL,
    "steering_adapter.cli.adapter_commands.export_adapter",
    "steering_adapter.runtimes.export.read_steering_adapter",
)


@dataclass(frozen=True)
class Row:
    """One bad input.

    Attributes:
        id: the row's name (the test id).
        setup: ``setup(inputs)`` builds files under ``inputs.tmp`` and returns the argv (``via`` ``"main"`` or
            ``"subprocess"``) or a callable that must raise (``via="python"``).
        expect: the exit code (CLI rows) or the exception class (Python rows).
        pattern: a regex the one error line (or the exception message) must match.
        via: ``"main"`` (in-process), ``"subprocess"`` (the Hub endpoint a closed port) or ``"python"``.
        refuse: what the call must not reach (patched to fail the row).
        names_file: a Python row's message must name adapter_config.json or adapter_model.safetensors.
        known_bug: the row's line is not the clear one yet (a strict xfail saying why; drop it once fixed).
    """

    id: str
    setup: Callable[[Inputs], Any]
    expect: int | type[BaseException]
    pattern: str
    via: str = "main"
    refuse: tuple[str, ...] = NO_MODEL
    names_file: bool = False
    known_bug: str | None = None


class Inputs:
    """A row's files: ``tmp`` (its tmp_path) and copies of the valid adapter built once per module."""

    def __init__(self, tmp: Path, valid_adapter: Path):
        self.tmp = tmp
        self._valid = valid_adapter

    def adapter(self, name: str = "adapter") -> Path:
        """A fresh copy of the valid adapter (layers 1 and 2 of the tiny Llama, scale -3)."""
        return Path(shutil.copytree(self._valid, self.tmp / name))

    def recipe(self, text: str | None = None, **changes: Any) -> Path:
        """recipe.yaml: ``text`` as written, else MINIMAL_RECIPE with its top-level keys replaced by ``changes``."""
        path = self.tmp / "recipe.yaml"
        if text is None:
            data = json.loads(json.dumps(MINIMAL_RECIPE))
            data.update(changes)
            text = yaml.safe_dump(data)
        path.write_text(text)
        return path

    def file(self, name: str, text: str = "x") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def csv(self) -> Path:
        return self.file("questions.csv", "id,question\n1,What is two plus two?\n2,Name a colour.\n")

    def out(self) -> list[str]:
        return ["--out", str(self.tmp / "out")]


# ----------------------------------------------------------------------------------------- breaking an adapter


def _edit_tensors(folder: Path, **tensors: torch.Tensor | None) -> Path:
    """Replace (or with ``None`` drop) tensors of adapter_model.safetensors; keys use ``__`` for ``.``."""
    path = folder / "adapter_model.safetensors"
    current = load_file(path)
    for key, value in tensors.items():
        key = key.replace("__", ".")
        if value is None:
            current.pop(key)
        else:
            current[key] = value
    save_file(current, path)
    return folder


def _nan(folder: Path) -> Path:
    vector = load_file(folder / "adapter_model.safetensors")[VECTOR_2].clone()
    vector[7] = float("nan")
    return _edit_tensors(folder, **{VECTOR_2.replace(".", "__"): vector})


def _extra_tensor(folder: Path) -> Path:
    return _edit_tensors(folder, base_model__model__model__layers__3__steering_vector=torch.randn(HIDDEN))


def _misspelt(folder: Path) -> Path:
    return edit_config(folder, scael=-2.7, scale=None)


def _zero_ablation(folder: Path) -> Path:
    edit_config(folder, mode="ablate")
    return _edit_tensors(folder, **{VECTOR_2.replace(".", "__"): torch.full((HIDDEN,), 1e-30)})


# ------------------------------------------------------------------------------------------------- the rows

BLOCKS = r"organism has 6 blocks \(valid: 0 to 5\)"
HUB = r"http://127\.0\.0\.1:\d+"

RECIPE_ROWS = [
    Row(
        "recipe-yaml-syntax-error",
        lambda i: ["run", str(i.recipe("name: t\nprompts:\n  refusal: [organism:political\n  compliance: x\n"))],
        EXIT_USAGE,
        r"^error: .*recipe\.yaml:4:13: not valid YAML:",
    ),
    Row(
        "recipe-not-a-mapping",
        lambda i: ["run", str(i.recipe("- just\n- a list\n")), *i.out()],
        EXIT_USAGE,
        r"recipe\.yaml: a recipe must be a YAML mapping, got list",
    ),
    Row(
        "recipe-missing-name",
        lambda i: ["run", str(i.recipe(yaml.safe_dump({"prompts": MINIMAL_RECIPE["prompts"]}))), *i.out()],
        EXIT_USAGE,
        r"missing required key 'name'",
    ),
    Row(
        "recipe-unknown-key",
        lambda i: ["run", str(i.recipe(sampling={"kk": 3})), *i.out()],
        EXIT_USAGE,
        r"recipe\.sampling: unknown key 'kk' \(known keys: .*k, max_new_tokens",
    ),
    Row(
        "recipe-wrong-type-bool-for-int",
        lambda i: ["run", str(i.recipe(sampling={"k": True})), *i.out()],
        EXIT_USAGE,
        r"recipe\.sampling\.k: expected an integer, got True",
    ),
    Row(
        "recipe-wrong-type-in-list",
        lambda i: ["run", str(i.recipe(selection={"alphas": [-1, "big"]})), *i.out()],
        EXIT_USAGE,
        r"recipe\.selection\.alphas\[1\]: expected a number, got 'big'",
    ),
    Row(
        "recipe-unknown-choice",
        lambda i: ["run", str(i.recipe(estimator={"method": "pca"})), *i.out()],
        EXIT_USAGE,
        r"recipe\.estimator\.method: expected 'md' or 'rmd' or 'wrmd', got 'pca'",
    ),
    Row(
        "recipe-k-zero",
        lambda i: ["run", str(i.recipe(sampling={"k": 0})), *i.out()],
        EXIT_USAGE,
        r"recipe\.sampling: k and max_new_tokens must be >= 1",
    ),
    Row(
        "recipe-k-negative-via-set",
        lambda i: ["run", str(i.recipe()), *i.out(), "--set", "sampling.k=-2"],
        EXIT_USAGE,
        r"recipe\.sampling: k and max_new_tokens must be >= 1",
    ),
    Row(
        "recipe-missing-prompt-file",
        lambda i: [
            "run",
            str(
                i.recipe(
                    prompts=dict(MINIMAL_RECIPE["prompts"], compliance=["organism:benign", str(i.tmp / "mine.txt")])
                )
            ),
            *i.out(),
        ],
        EXIT_USAGE,
        r"^error: recipe\.prompts\.compliance\[1\]: prompt file .*mine\.txt.* does not exist",
    ),
    Row(
        "recipe-empty-prompt-file",
        lambda i: [
            "run",
            str(
                i.recipe(
                    prompts=dict(MINIMAL_RECIPE["prompts"], compliance=["organism:benign", str(i.file("e.txt", ""))])
                )
            ),
            *i.out(),
        ],
        EXIT_USAGE,
        r"^error: recipe\.prompts\.compliance\[1\]: .*e\.txt.* is empty",
    ),
    Row(
        "recipe-blank-prompt-file",
        lambda i: [
            "run",
            str(i.recipe(prompts=dict(MINIMAL_RECIPE["prompts"], refusal=[str(i.file("b.txt", "\n\n   \n"))]))),
            *i.out(),
        ],
        EXIT_USAGE,
        r"^error: recipe\.prompts\.refusal\[0\]: .*b\.txt.* is empty",
    ),
    Row(  # the recipe's one-class case: contrast prompts for one class only
        "recipe-one-class-no-compliance-prompts",
        lambda i: ["run", str(i.recipe(prompts=dict(MINIMAL_RECIPE["prompts"], compliance=[]))), *i.out()],
        EXIT_USAGE,
        r"both 'refusal' and 'compliance'",
    ),
    Row(
        "recipe-no-target-evaluation-set",
        lambda i: [
            "run",
            str(
                i.recipe(
                    prompts=dict(MINIMAL_RECIPE["prompts"], evaluation=[MINIMAL_RECIPE["prompts"]["evaluation"][1]])
                )
            ),
            *i.out(),
        ],
        EXIT_USAGE,
        r"role 'target'",
    ),
    Row(
        "recipe-gating-layers-out-of-range",
        lambda i: [
            "run",
            str(i.recipe()),
            *i.out(),
            "--no-progress",
            "--set",
            "gating={mode: 'on', negative: ['organism:harmful'], layers: [0, 1, 12]}",
        ],
        EXIT_USAGE,
        rf"^error: recipe\.gating\.layers\[2\]: block 12 does not exist; {BLOCKS}$",
        refuse=AFTER_LOAD,
    ),
    Row(
        "recipe-estimator-layers-out-of-range",
        lambda i: ["run", str(i.recipe()), *i.out(), "--no-progress", "--set", "estimator.layers=[3, -1]"],
        EXIT_USAGE,
        rf"^error: recipe\.estimator\.layers\[1\]: block -1 does not exist; {BLOCKS}$",
        refuse=AFTER_LOAD,
    ),
    Row(
        "recipe-model-missing-folder",
        lambda i: ["run", str(i.recipe(model={"name_or_path": str(i.tmp / "models" / "qwen")})), *i.out()],
        EXIT_USAGE,
        r"^error: recipe\.model\.name_or_path: no such folder '.*/models/qwen' \(and it cannot be a Hub repo id\)$",
    ),
    Row(
        "run-out-existing-file",
        lambda i: ["run", str(i.recipe()), "--out", str(i.file("out.txt"))],
        EXIT_USAGE,
        r"^error: --out: .*out\.txt is an existing file, not a folder; give a folder to write into$",
    ),
    Row(
        "recipe-output-dir-inside-a-file",
        lambda i: ["run", str(i.recipe()), "--set", f"output.dir={i.file('out.txt')}/sub"],
        EXIT_USAGE,
        r"^error: recipe\.output\.dir: cannot create folder .*out\.txt/sub: .*out\.txt is a file$",
    ),
    Row(
        "recipe-csv-without-prompt-column",
        lambda i: ["run", str(i.recipe(prompts=dict(MINIMAL_RECIPE["prompts"], compliance=[str(i.csv())]))), *i.out()],
        EXIT_USAGE,
        r"recipe\.prompts\.compliance\[0\]: .*questions\.csv: no 'prompt' column.*recipe\.prompts\.column "
        r"\(one of \['id', 'question'\]\)",
    ),
    Row(
        "recipe-prompts-column-the-csv-lacks",
        lambda i: [
            "run",
            str(i.recipe(prompts=dict(MINIMAL_RECIPE["prompts"], compliance=[str(i.csv())], column="text"))),
            *i.out(),
        ],
        EXIT_USAGE,
        r"^error: recipe\.prompts\.compliance\[0\]: .*questions\.csv: no column 'text' "
        r"\(from recipe\.prompts\.column\); columns are \['id', 'question'\]$",
    ),
]

EVAL_ROWS = [
    Row(
        "eval-out-existing-file",
        lambda i: ["eval", str(i.adapter()), "--sets", "p=organism:political:target", "--out", str(i.file("o.txt"))],
        EXIT_USAGE,
        r"^error: --out: .*o\.txt is an existing file, not a folder",
    ),
    Row(
        "eval-sets-without-role",
        lambda i: ["eval", str(i.adapter()), *i.out(), "--sets", "political=organism:political"],
        EXIT_USAGE,
        r"^error: --sets 'political=organism:political': 'political' is not a role.*NAME=SOURCE:ROLE, e\.g\. "
        r"political=organism:political:target",
    ),
    Row(
        "eval-sets-organism-without-topic",
        lambda i: ["eval", str(i.adapter()), *i.out(), "--sets", "p=organism:target"],
        EXIT_USAGE,
        r"'organism' names no prompts: use organism:<category or topic>",
    ),
    Row(
        "eval-csv-without-prompt-column",
        lambda i: ["eval", str(i.adapter()), *i.out(), "--sets", f"q={i.csv()}:benign"],
        EXIT_USAGE,
        r"no 'prompt' column; name the prompt column with --column",
    ),
    Row(
        "eval-column-missing-column",
        lambda i: ["eval", str(i.adapter()), *i.out(), "--sets", f"q={i.csv()}:benign", "--column", "text"],
        EXIT_USAGE,
        r"^error: .*questions\.csv: no column 'text' \(from --column\); columns are \['id', 'question'\]$",
    ),
    Row(
        "eval-adapter-missing-folder",
        lambda i: ["eval", str(i.tmp / "nowhere"), *i.out(), "--sets", "p=organism:political:target"],
        EXIT_USAGE,
        r"^error: eval ADAPTER: no such folder '.*/nowhere' \(and it cannot be a Hub repo id\)$",
    ),
    Row(
        "eval-adapter-folder-without-config",
        lambda i: ["eval", str(i.tmp), *i.out(), "--sets", "p=organism:political:target"],
        EXIT_USAGE,
        r"^error: eval ADAPTER: adapter_config\.json not found in adapter folder ",
    ),
]

GENERATE_ROWS = [
    Row(
        "generate-adapter-missing-folder",
        lambda i: ["generate", "--model", "organism", "--adapter", str(i.tmp / "adapter"), "--prompt", "hi"],
        EXIT_USAGE,
        r"^error: --adapter: no such folder '.*/adapter' \(and it cannot be a Hub repo id\)$",
    ),
    Row(
        "generate-model-missing-folder",
        lambda i: ["generate", "--model", str(i.tmp / "no-such-model"), "--prompt", "hi"],
        EXIT_USAGE,
        r"^error: --model: no such folder '.*/no-such-model' \(and it cannot be a Hub repo id\)$",
    ),
    Row(
        "generate-model-folder-without-config",
        lambda i: ["generate", "--model", str(i.tmp), "--prompt", "hi"],
        EXIT_USAGE,
        r"^error: --model: .* is a folder without config\.json, not a transformers model folder$",
    ),
    Row(
        "chat-model-is-a-file",
        lambda i: ["chat", "--model", str(i.file("weights.bin"))],
        EXIT_USAGE,
        r"^error: --model: .*weights\.bin is a file; a model is a folder or a Hub repo id$",
    ),
]

OTHER_FILE_ROWS = [
    Row(
        "run-recipe-file-missing",
        lambda i: ["run", str(i.tmp / "missing.yaml"), *i.out()],
        EXIT_USAGE,
        r"^error: recipe file '.*/missing\.yaml' does not exist$",
    ),
    Row(
        "judge-check-labels-file-missing",
        lambda i: ["judge-check", "--labels", str(i.tmp / "missing.jsonl")],
        EXIT_USAGE,
        r"^error: labels file '.*/missing\.jsonl' does not exist$",
    ),
    Row(
        "import-gguf-file-missing",
        lambda i: ["import-gguf", str(i.tmp / "missing.gguf"), "--base", "organism"],
        EXIT_USAGE,
        r"^error: .*/missing\.gguf is not a readable GGUF file: .*No such file or directory",
    ),
]

MEMORY_ROWS = [
    Row(
        "memory-config-not-json",
        lambda i: ["memory", str(i.recipe()), "--config", str(i.file("config.json", "model_type: llama\n"))],
        EXIT_USAGE,
        r"^error: --config: .*config\.json is not valid JSON: Expecting value \(line 1, column 1\)$",
    ),
    Row(
        "memory-config-unknown-model-type",
        lambda i: [
            "memory",
            str(i.recipe()),
            "--config",
            str(i.file("config.json", json.dumps({"model_type": "no-such-architecture"}))),
        ],
        EXIT_USAGE,
        r"^error: --config: .*config\.json: model_type 'no-such-architecture' is not one transformers",
    ),
    Row(
        "memory-config-missing",
        lambda i: ["memory", str(i.recipe()), "--config", str(i.tmp / "missing.json")],
        EXIT_USAGE,
        r"^error: --config: .*missing\.json does not exist",
    ),
]

HUB_ROWS = [  # HF_ENDPOINT a closed port: huggingface_hub reads it once, at import, so a fresh process
    Row(
        "hub-unreachable-run-unknown-model-id",
        lambda i: ["run", str(i.recipe(model={"name_or_path": "org/unknown-model"})), *i.out()],
        EXIT_ERROR,
        rf"^error: recipe\.model\.name_or_path: 'org/unknown-model' is not a local folder.*cannot be reached at "
        rf"{HUB} .*HF_ENDPOINT.*HF_HUB_OFFLINE",
        via="subprocess",
    ),
    Row(
        "hub-unreachable-generate-adapter-repo-id",
        lambda i: ["generate", "--model", "organism", "--adapter", "org/unknown-adapter", "--prompt", "hi"],
        EXIT_ERROR,
        rf"^error: --adapter: 'org/unknown-adapter' is not a local folder.*cannot be reached at {HUB} .*HF_ENDPOINT",
        via="subprocess",
    ),
    Row(
        "hub-unreachable-push",
        lambda i: ["push", str(i.adapter()), "org/adapter"],
        EXIT_ERROR,
        rf"^error: cannot reach the Hub at {HUB} \(the endpoint comes from HF_ENDPOINT",
        via="subprocess",
    ),
]

ADAPTER_ROWS = [
    # push checks the folder before any network call (the in-process endpoint is a closed port too: reaching it
    # would be exit 1, "cannot reach the Hub")
    Row(
        "push-nan-vector",
        lambda i: ["push", str(_nan(i.adapter())), "org/adapter"],
        EXIT_USAGE,
        r"^error: .*adapter_model\.safetensors: steering vector for layer 2 contains NaN or Inf$",
    ),
    Row(
        "push-extra-tensor",
        lambda i: ["push", str(_extra_tensor(i.adapter())), "org/adapter"],
        EXIT_USAGE,
        r"^error: .*adapter_model\.safetensors: .*do not belong to the configured layers \[1, 2\]",
    ),
    Row(
        "push-misspelt-config-key",
        lambda i: ["push", str(_misspelt(i.adapter())), "org/adapter"],
        EXIT_USAGE,
        r"^error: .*adapter_config\.json: unknown key 'scael' \(did you mean 'scale'\?\)",
    ),
    Row(
        "push-zero-ablation",
        lambda i: ["push", str(_zero_ablation(i.adapter())), "org/adapter"],
        EXIT_USAGE,
        rf"^error: .*adapter_model\.safetensors: .*{re.escape(repr(VECTOR_2))} \(block 2\) is zero or too small to "
        r"define a direction",
    ),
    Row(
        "push-missing-folder",
        lambda i: ["push", str(i.tmp / "nowhere"), "org/adapter"],
        EXIT_USAGE,
        r"^error: .*nowhere is not a folder: push uploads a saved steering adapter folder$",
    ),
    Row(
        "inspect-check-nan",
        lambda i: ["inspect", str(_nan(i.adapter())), "--check"],
        EXIT_USAGE,
        r"^error: .*adapter_model\.safetensors: steering vector for layer 2 contains NaN or Inf$",
    ),
    Row(
        "inspect-check-unknown-mode",
        lambda i: ["inspect", str(edit_config(i.adapter(), mode="multiply")), "--check"],
        EXIT_USAGE,
        r"^error: .*adapter_config\.json: unknown steering mode 'multiply'",
    ),
    Row(
        "inspect-check-misspelt-key",
        lambda i: ["inspect", str(_misspelt(i.adapter())), "--check"],
        EXIT_USAGE,
        r"^error: .*adapter_config\.json: unknown key 'scael' \(did you mean 'scale'\?\)",
    ),
    Row(
        "inspect-check-zero-ablation",
        lambda i: ["inspect", str(_zero_ablation(i.adapter())), "--check"],
        EXIT_USAGE,
        r"^error: .*\(block 2\) is zero or too small to define a direction",
    ),
    Row(
        "inspect-missing-folder",
        lambda i: ["inspect", str(i.tmp / "nowhere")],
        EXIT_USAGE,
        r"^error: .*no such folder '.*/nowhere'",
    ),
    Row(
        "export-lora-out-existing-file",
        lambda i: ["export", str(i.adapter()), "--format", "lora", "--out", str(i.file("taken.txt"))],
        EXIT_USAGE,
        r"^error: --out .*taken\.txt is an existing file, but the lora export writes a folder: give a folder path$",
        refuse=NO_EXPORT,
    ),
    Row(
        "export-merged-out-existing-file",
        lambda i: ["export", str(i.adapter()), "--format", "merged", "--out", str(i.file("taken.txt"))],
        EXIT_USAGE,
        r"^error: --out .*taken\.txt is an existing file, but the merged export writes a folder: give a folder path$",
        refuse=NO_EXPORT,
    ),
    Row(
        "export-gguf-out-existing-folder",
        lambda i: ["export", str(i.adapter()), "--format", "gguf", "--out", str(i.tmp)],
        EXIT_USAGE,
        r"^error: --out .* is an existing folder, but the gguf export writes one \.gguf file",
        refuse=NO_EXPORT,
    ),
    Row(
        "export-out-inside-a-file",
        lambda i: ["export", str(i.adapter()), "--format", "gguf", "--out", f"{i.file('blocker')}/sub/out.gguf"],
        EXIT_USAGE,
        r"^error: --out .*blocker/sub/out\.gguf: .*blocker is a file, so nothing can be written inside it$",
        refuse=NO_EXPORT,
    ),
    Row(
        "export-adapter-missing-folder",
        lambda i: ["export", str(i.tmp / "nowhere"), "--format", "lora", "--out", str(i.tmp / "lora")],
        EXIT_USAGE,
        r"^error: .*no such folder '.*/nowhere'",
    ),
    Row(
        "export-misspelt-key",
        lambda i: ["export", str(_misspelt(i.adapter())), "--format", "lora", "--out", str(i.tmp / "lora")],
        EXIT_USAGE,
        r"^error: .*adapter/adapter_config\.json: unknown key 'scael' \(did you mean 'scale'\?\)",
    ),
]


# ------------------------------------------------------------------------------------------ the Python flows


def _peft_from_pretrained(model: torch.nn.Module, folder: str) -> Any:
    return PeftModel.from_pretrained(model, folder)


def _load_adapter(model: torch.nn.Module, folder: str) -> Any:
    return model.load_adapter(folder, adapter_name="probe")


FLOWS = {"PeftModel.from_pretrained": _peft_from_pretrained, "model.load_adapter": _load_adapter}
GATED = ("condition_fields_without_tensor", "zero_condition", "int_condition")
GATE = {"layer": 1, "comparator": "greater", "position": "last", "offset": 0.0}


def _broken_load(breakage: str, flow: str) -> Callable[[Inputs], Callable[[], Any]]:
    """The setup of a Python row: a folder of test_load_properties' ``breakage``, loaded through ``flow``."""

    def setup(inputs: Inputs) -> Callable[[], Any]:
        gate = GATE if breakage in GATED else None
        spec = LOAD_PROPERTIES.AdapterSpec("llama", [1, 2], "add", 1.5, None, 3, gate, breakage)
        folder = str(inputs.tmp / "adapter")
        LOAD_PROPERTIES.write_adapter(spec, folder, None)

        def call() -> Any:
            model = LOAD_PROPERTIES.pristine("llama")
            try:
                return FLOWS[flow](model, folder)
            finally:
                assert LOAD_PROPERTIES.untouched(model), f"{flow} / {breakage}: the refused load changed the model"

        return call

    return setup


def _one_class_fit(inputs: Inputs) -> Callable[[], Any]:
    X = np.random.default_rng(0).normal(size=(8, 4))
    return lambda: MeanDifference().fit(X, np.ones(8, bool))


PYTHON_ROWS = [
    Row(
        f"python-{flow}-{breakage}",
        _broken_load(breakage, flow),
        ValueError,
        re.escape(fragment),
        via="python",
        names_file=True,
    )
    for breakage, fragment in sorted(BREAKAGES.items())
    for flow in FLOWS
] + [
    Row(
        "python-estimator-one-class-labels",
        _one_class_fit,
        ValueError,
        r"^y contains only one class \(every sample is refusal\); both classes are needed$",
        via="python",
    ),
]

ROWS = RECIPE_ROWS + EVAL_ROWS + GENERATE_ROWS + OTHER_FILE_ROWS + MEMORY_ROWS + HUB_ROWS + ADAPTER_ROWS + PYTHON_ROWS
PARAMS = [
    pytest.param(
        row,
        id=row.id,
        marks=[pytest.mark.xfail(raises=AssertionError, strict=True, reason=row.known_bug)] if row.known_bug else [],
    )
    for row in ROWS
]


# ------------------------------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def valid_adapter(tmp_path_factory) -> Path:
    """A valid saved adapter (layers 1 and 2 of the tiny Llama, scale -3), copied by the rows that break it."""
    generator = torch.Generator().manual_seed(3)
    vectors = {layer: torch.randn(HIDDEN, generator=generator) for layer in (1, 2)}
    folder = tmp_path_factory.mktemp("valid") / "adapter"
    return Path(save_adapter(adapter_from_vectors(tiny_model("llama"), vectors, scale=-3.0), folder))


def _refuser(target: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{target} was reached before the error")

    return refuse


def _single_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def test_the_table_is_large_and_its_ids_unique():
    ids = [row.id for row in ROWS]
    assert len(ROWS) >= 40, len(ROWS)
    assert not [name for name, count in Counter(ids).items() if count > 1], Counter(ids).most_common(3)
    python_ids = {row.id for row in PYTHON_ROWS}
    for breakage in BREAKAGES:  # every breakage kind of test_load_properties, through both flows
        assert {f"python-{flow}-{breakage}" for flow in FLOWS} <= python_ids, breakage


@pytest.mark.parametrize("row", PARAMS)
def test_bad_input_is_one_clear_line(row: Row, valid_adapter, tmp_path, monkeypatch, capsys):
    inputs = Inputs(tmp_path, valid_adapter)
    call = row.setup(inputs)
    if row.via == "python":
        with pytest.raises(row.expect) as caught:
            call()
        assert isinstance(caught.value, (ValueError, FileNotFoundError)), repr(caught.value)
        message = str(caught.value)
        assert len(message.splitlines()) == 1, message
        if row.names_file:
            assert str(tmp_path) in message, message
            assert re.search(r"adapter_config\.json|adapter_model\.safetensors", message), message
        assert re.search(row.pattern, message), message
        return
    if row.via == "subprocess":
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "OMP_NUM_THREADS": "1",
            "STEERING_ADAPTER_THREADS": "1",
            "HF_ENDPOINT": f"http://127.0.0.1:{unused_port()}",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_CACHE": str(tmp_path / "hub"),
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_TOKEN": "hf_dummy",
        }
        result = subprocess.run(
            [sys.executable, "-m", "steering_adapter.cli", *call],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        code, line = result.returncode, _single_error_line(result.stderr)
        assert env["HF_ENDPOINT"] in line, line
    else:
        monkeypatch.setenv("STEERING_ADAPTER_THREADS", "1")
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{unused_port()}")  # never a real Hub
        refuse_calls(monkeypatch, row.refuse, _refuser)
        code = main(call)
        line = _single_error_line(capsys.readouterr().err)
    assert code == row.expect, line
    assert re.search(row.pattern, line), line


VLLM_ROWS = {
    "generate": lambda adapter: ["generate", "--model", "organism", "--adapter", adapter, "--prompt", "hi"],
    "chat": lambda adapter: ["chat", "--model", "organism", "--adapter", adapter],
    "eval": lambda adapter: ["eval", adapter, "--model", "organism", "--sets", "p=organism:political:target"],
}


@pytest.mark.parametrize("command", list(VLLM_ROWS))
def test_the_vllm_backend_without_vllm_is_one_clear_line(command, valid_adapter, tmp_path, monkeypatch, capsys):
    """``--backend vllm`` where vLLM is not installed (hidden here when it is): one line naming the option and the
    install command, before any model loads."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    monkeypatch.setenv("STEERING_ADAPTER_THREADS", "1")
    refuse_calls(monkeypatch, MODEL_LOADERS, _refuser)
    argv = [*VLLM_ROWS[command](str(valid_adapter)), "--backend", "vllm"]
    if command == "eval":
        argv += ["--out", str(tmp_path / "out")]
    code = main(argv)
    line = _single_error_line(capsys.readouterr().err)
    assert code == EXIT_USAGE, line
    assert re.fullmatch(
        r"error: --backend vllm: needs vLLM, which is not installed here: pip install 'steering-adapter\[vllm\]' "
        r"\(or bash scripts/bootstrap\.sh --vllm for the tested CPU build in \.venv-vllm\)",
        line,
    ), line
