"""Recipe validation (errors name the key) and the console script's help and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steering_adapter.cli import EXIT_USAGE, build_parser, main
from steering_adapter.run.recipe import RecipeError, load_recipe, recipe_from_dict

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))

MINIMAL = {
    "name": "t",
    "prompts": {
        "refusal": ["organism:political"],
        "compliance": ["organism:benign"],
        "evaluation": [{"name": "p", "source": "organism:political", "role": "target"}],
    },
}


def test_shipped_recipes_are_valid():
    assert RECIPES, "recipes/ must ship recipes"
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe.name == path.stem


def _with(**changes):
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"selection__alphas": [-1, "big"]}, r"recipe\.selection\.alphas\[1\]: expected a number, got 'big'"),
        ({"estimator__method": "pca"}, r"recipe\.estimator\.method: expected 'md' or 'rmd' or 'wrmd', got 'pca'"),
        ({"sampling__kk": 3}, r"recipe\.sampling: unknown key 'kk' \(known keys: .*k, max_new_tokens"),
        (
            {"judge__kind": "oracle"},
            r"recipe\.judge\.kind: expected 'probe' or 'pattern' or 'embedding' or 'openai' or 'transformers'",
        ),
        (
            {"prompts__evaluation": [{"name": "p", "source": "x", "role": "victim"}]},
            r"recipe\.prompts\.evaluation\[0\]\.role",
        ),
        (
            {"prompts__evaluation": [{"name": "p", "role": "target"}]},
            r"recipe\.prompts\.evaluation\[0\]: missing required key 'source'",
        ),
        ({"prompts__compliance": []}, "both 'refusal' and 'compliance'"),
        (
            {"prompts__evaluation": [{"name": "p", "source": "jailbreak:dan:organism:political", "role": "target"}]},
            r"^recipe\.prompts\.evaluation\[0\]\.source: 'jailbreak:dan:organism:political': unknown attack family",
        ),
        ({"scoring__unparseable": "ignore"}, r"recipe\.scoring\.unparseable: expected 'keep' or 'drop', got 'ignore'"),
        (
            {"benchmarks__tasks": ["mmlu", "hellaswag"]},
            r"^recipe\.benchmarks\.tasks\[1\]: unknown benchmark 'hellaswag'; expected mmlu, mmlu_<category>",
        ),
        ({"benchmarks__limit": 0}, r"recipe\.benchmarks\.limit: must be >= 1 or null, got 0"),
        (
            {"benchmarks__tasks": ["mmlu"], "benchmarks__variants": ["steered"], "benchmarks__max_drop": 1.0},
            r"recipe\.benchmarks\.max_drop: .*the .base. and .steered. variants",
        ),
        ({"benchmarks__variants": ["gated"]}, r"recipe\.benchmarks\.variants\[0\]: expected"),
        ({"prompts__evaluation": [{"name": "p", "source": "x", "role": "harmful"}]}, "role 'target'"),
        ({"estimator__ridge_lambda": 0}, r"ridge_lambda: must be > 0"),
        ({"gating__method": "lda"}, r"recipe\.gating\.method: expected 'md' or 'rmd', got 'lda'"),
        ({"gating__ridge_lambda": -1.0}, r"recipe\.gating\.ridge_lambda: must be > 0"),
        ({"sampling__k": True}, r"recipe\.sampling\.k: expected an integer, got True"),
        ({"selection__min_depth_fraction": 1.0}, r"recipe\.selection\.min_depth_fraction: must be in \[0, 1\)"),
        ({"estimator__answer_scale": -1.0}, r"recipe\.estimator\.answer_scale: must be >= 0, got -1.0"),
        (
            {"estimator__answer_scale": 0.5, "estimator__units": "raw"},
            r"recipe\.estimator\.answer_scale: the answer-token push is measured in separation units",
        ),
    ],
)
def test_schema_errors_name_the_key(changes, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(_with(**changes))


def test_unquoted_on_off_in_yaml_mean_the_gating_modes():
    for text, mode in (("off", "off"), ("on", "on"), ("compare", "compare")):
        data = yaml.safe_load(yaml.safe_dump(MINIMAL) + f"gating:\n  mode: {text}\n  negative: [organism:harmful]\n")
        assert recipe_from_dict(data).gating.mode == mode
    with pytest.raises(RecipeError, match=r"recipe\.estimator\.position: expected 'last' or 'mean', got True"):
        recipe_from_dict(_with(estimator__position=True))


def test_missing_name_and_not_a_mapping():
    with pytest.raises(RecipeError, match="missing required key 'name'"):
        recipe_from_dict({k: v for k, v in MINIMAL.items() if k != "name"})
    with pytest.raises(RecipeError, match="expected a mapping"):
        recipe_from_dict(["not", "a", "mapping"])


def test_defaults_fill_in():
    recipe = recipe_from_dict(MINIMAL)
    assert recipe.estimator.method == "rmd" and recipe.sampling.k == 5 and recipe.model.name_or_path == "organism"


def test_every_subcommand_has_complete_help():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert set(subcommands) == {
        "run",
        "memory",
        "eval",
        "generate",
        "chat",
        "push",
        "inspect",
        "export",
        "import-gguf",
        "judge-check",
    }
    for name, sub in subcommands.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name}: option {action.dest} has no help text"
        assert sub.description, name
        assert "usage:" in text


def test_console_script_help_and_exit_codes(tmp_path):
    result = subprocess.run([sys.executable, "-m", "steering_adapter.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Exit codes" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with(sampling__kk=1)))
    assert main(["run", str(bad)]) == EXIT_USAGE
    assert main(["inspect", str(tmp_path / "nowhere")]) == EXIT_USAGE
    with pytest.raises(SystemExit) as excinfo:
        main(["frobnicate"])
    assert excinfo.value.code == 2


def test_stage_dir_moves_a_folder_of_other_settings_aside(tmp_path):
    from steering_adapter.run.stages.folders import stage_dir

    logs: list[str] = []
    stage = tmp_path / "selection"
    assert stage_dir(stage, "aaa", logs.append) == stage and logs == []
    (stage / "records.jsonl").write_text("kept\n")
    assert stage_dir(stage, "aaa", logs.append) == stage and (stage / "records.jsonl").is_file()  # same: resume
    stage_dir(stage, "bbb", logs.append)  # other settings: moved aside, never deleted
    assert (tmp_path / "selection.stale-aaa" / "records.jsonl").read_text() == "kept\n"
    assert sorted(p.name for p in stage.iterdir()) == ["stage.json"] and "moved to selection.stale-aaa" in logs[0]
    legacy = tmp_path / "evaluation"
    (legacy / "base").mkdir(parents=True)  # written before stage fingerprints existed
    stage_dir(legacy, "ccc", logs.append)
    assert (tmp_path / "evaluation.stale-unknown" / "base").is_dir()
