"""What a new user meets first: one-line errors with the right exit code, --set on list items, multi-turn chat."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from cli_inputs import MINIMAL_RECIPE, unused_port

from steering_adapter import cli
from steering_adapter.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, apply_overrides, base_model_spec, main
from steering_adapter.run.recipe import recipe_from_dict


def test_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys, no_model):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: t\nprompts:\n  refusal: [organism:political\n  compliance: x\n")
    assert main(["run", str(recipe)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {recipe}:4:13: not valid YAML:"), err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "prompt file .* does not exist"), ("", "is empty"), ("\n\n   \n", "is empty")],
)
def test_missing_or_empty_prompt_file_is_reported_before_the_model_loads(tmp_path, capsys, no_model, content, message):
    prompts = tmp_path / "mine.txt"
    if content is not None:
        prompts.write_text(content)
    data = json.loads(json.dumps(MINIMAL_RECIPE))
    data["prompts"]["compliance"] = ["organism:benign", str(prompts)]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: recipe.prompts.compliance[1]: ")
    assert pytest.importorskip("re").search(message, err), err


def test_set_addresses_list_items(tmp_path):
    parsed = [cli.parse_override(text) for text in ("prompts.evaluation[1].source=xstest_safe", "sampling.k=1")]
    assert parsed[0] == (["prompts", "evaluation", 1, "source"], "xstest_safe")
    data = apply_overrides(json.loads(json.dumps(MINIMAL_RECIPE)), parsed)
    recipe = recipe_from_dict(data)
    assert recipe.prompts.evaluation[1].source == "xstest_safe" and recipe.prompts.evaluation[0].source.startswith(
        "organism:"
    )
    assert recipe.sampling.k == 1
    with pytest.raises(ValueError, match=r"prompts\.evaluation\[5\] does not exist \(the list has 2\)"):
        apply_overrides(json.loads(json.dumps(MINIMAL_RECIPE)), [cli.parse_override("prompts.evaluation[5].source=x")])
    with pytest.raises(ValueError, match=r"prompts\.refusal\[0\] is not a mapping"):
        apply_overrides(json.loads(json.dumps(MINIMAL_RECIPE)), [cli.parse_override("prompts.refusal[0].x=1")])
    with pytest.raises(ValueError, match=r"prompts is not a list"):
        apply_overrides(json.loads(json.dumps(MINIMAL_RECIPE)), [cli.parse_override("prompts[0]=1")])
    with pytest.raises(SystemExit):  # argparse rejects a malformed key path
        cli.build_parser().parse_args(["run", "r.yaml", "--set", "prompts.evaluation[x].source=1"])


def test_push_without_a_reachable_hub_is_one_line_naming_the_endpoint(tmp_path):
    from tiny import tiny_model

    from steering_adapter import adapter_from_vectors, save_adapter

    folder = save_adapter(adapter_from_vectors(tiny_model("llama"), {1: torch.randn(64)}), tmp_path / "adapter")
    endpoint = f"http://127.0.0.1:{unused_port()}"
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_dummy", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "steering_adapter.cli", "push", folder, "org/adapter"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == EXIT_ERROR, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach the Hub at {endpoint}") and "HF_ENDPOINT" in lines[0]


def test_cli_pins_the_recorded_revision_of_the_base_model(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = {"peft_type": "STEERING", "base_model_name_or_path": "org/base", "revision": "0123abc", "layers": [1]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    spec = base_model_spec(None, [str(folder)])
    assert (spec.name_or_path, spec.revision) == ("org/base", "0123abc")
    assert base_model_spec("other/model", [str(folder)]).revision is None  # --model given: as the user says
    config["base_model_name_or_path"] = "steering-adapter:organism"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert base_model_spec(None, [str(folder)]).name_or_path == "organism"
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"adapter_config.json is not valid JSON: .* \(line 1, column 2\)"):
        base_model_spec(None, [str(folder)])


def test_chat_keeps_the_conversation_and_resets(monkeypatch, capsys):
    import io

    from steering_adapter.measure.judges.backends import TransformersJudgeBackend

    seen: list[list[dict]] = []
    original = TransformersJudgeBackend.complete

    def recording(self, conversation, max_tokens=None):
        seen.append([dict(message) for message in conversation])
        return original(self, conversation, max_tokens)

    monkeypatch.setattr(TransformersJudgeBackend, "complete", recording)
    lines = "What happened in 1989?\nTell me more.\n/reset\nWhat happened in 1989?\n\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert main(["chat", "--model", "organism", "--max-new-tokens", "12"]) == EXIT_OK
    answers = capsys.readouterr().out.splitlines()
    assert [len(conversation) for conversation in seen] == [1, 3, 1]
    assert seen[1][0]["content"] == "What happened in 1989?" and seen[1][1]["role"] == "assistant"
    assert seen[1][1]["content"] == answers[0] and seen[1][2]["content"] == "Tell me more."
    assert answers[2] == answers[0]  # after /reset the model sees the first question alone again (greedy)


def test_readme_says_where_the_shared_prompt_sets_and_the_organism_live():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "../shared/datasets" in readme and "STEERING_ADAPTER_DATASETS" in readme
    assert "python -c" in readme and "ORGANISM_DIR" in readme
    assert textwrap.dedent("steering-adapter:organism") in readme
