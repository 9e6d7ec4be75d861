"""Model cards: valid Hub YAML front matter and the adapter's facts in the text."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import yaml
from peft import PeftModel

from steering_adapter.adapter.cards import read_front_matter, render_model_card, set_card_repo_id, write_model_card


def _config(**extra):
    config = {
        "peft_type": "STEERING",
        "base_model_name_or_path": "Qwen/Qwen3-4B-Instruct-2507",
        "revision": "abc123",
        "layers": [14, 16],
        "scale": -4.0,
        "mode": "add",
        "hidden_size": 2560,
        "num_hidden_layers": 36,
        "steering_metadata": {"method": "rmd", "ridge_lambda": 0.1, "judge": {"kind": "llm", "model": "gpt-oss-20b"}},
    }
    config.update(extra)
    return config


def test_front_matter_is_valid_hub_yaml():
    card = render_model_card(_config())
    front = read_front_matter(card)
    assert front["base_model"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert front["library_name"] == "peft"
    assert "steering" in front["tags"]
    # the whole front matter block is plain YAML with only JSON-compatible values
    json.dumps(front)


def test_card_text_carries_the_adapter_facts():
    card = render_model_card(_config(), evaluation={"markdown": "| set | before | after |\n|---|---|---|"})
    assert "`Qwen/Qwen3-4B-Instruct-2507` @ `abc123`" in card
    assert "| layers (0-based block outputs) | 14, 16 |" in card
    assert "| scale α | -4.0 |" in card and "| method | rmd |" in card
    assert "direction.{14, 16}" in card  # llama.cpp adds direction.N to block N's output
    assert "| set | before | after |" in card
    assert "{{" not in card and "{%" not in card  # every template field was filled
    assert "<base model>" not in card and "<this repo>" not in card


def test_card_describes_the_gate_and_the_judge():
    card = render_model_card(
        _config(
            condition_layer=3,
            condition_threshold=5.5,
            condition_comparator="greater",
            condition_position="mean",
            steering_metadata={
                "judge": {"kind": "pattern", "model": None},
                "condition": {"method": "rmd", "heldout_tpr": 0.96, "heldout_fpr": 0.0},
            },
        )
    )
    assert (
        "| gate | steers only prompts whose mean block-3 output projects greater than 5.5 on the condition direction "
        "(rmd); held-out: selects 96.0 % of topic prompts, 0.0 % of others |" in card
    )
    assert "| judge | pattern |" in card
    assert "| gate |" not in render_model_card(_config())


def test_card_names_the_answer_token_push():
    metadata = {"method": "rmd", "position": "mean", "vector_units": "class_separation", "answer_scale": 1.0}
    card = render_model_card(_config(steering_metadata=metadata))
    assert "| answer-token push ρ | 1.0 (each vector is s·(û_prompt + ρ·û_answer): the mean prompt direction" in card
    assert "answer-token push" not in render_model_card(_config(steering_metadata={**metadata, "answer_scale": 0.0}))


def test_write_model_card_reads_the_saved_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(_config()))
    path = write_model_card(str(tmp_path))
    assert read_front_matter(open(path).read())["base_model"].startswith("Qwen/")


@pytest.mark.parametrize("text", ["no front matter", "---\nbase_model: x\n", "---\n- a list\n---\n"])
def test_bad_front_matter_is_an_error(text):
    with pytest.raises((ValueError, yaml.YAMLError)):
        read_front_matter(text)


def _code_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)


def test_organism_card_has_no_fake_base_model_and_its_usage_code_runs(tmp_path):
    """The organism is not a Hub model: no base_model in the front matter; the usage code runs offline as written."""
    from steering_adapter import adapter_from_vectors, save_adapter
    from steering_adapter.models.organism import ORGANISM_ID, load_organism

    model, _ = load_organism()
    hidden = model.config.hidden_size
    peft_model = adapter_from_vectors(
        model,
        {1: torch.randn(hidden)},
        scale=-1.0,
        steering_metadata={"method": "rmd", "vector_units": "class_separation"},
    )
    peft_model.peft_config["default"].base_model_name_or_path = "organism"
    folder = save_adapter(peft_model, tmp_path / "adapter")
    card = open(os.path.join(folder, "README.md")).read()
    front = read_front_matter(card)
    assert "base_model" not in front and front["library_name"] == "peft" and "steering" in front["tags"]
    assert json.load(open(os.path.join(folder, "adapter_config.json")))["base_model_name_or_path"] == ORGANISM_ID
    assert "α = −1 moves the refused prompts' mean onto the complied prompts' mean" in card
    (code,) = _code_blocks(card)
    assert folder in code
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the card's own usage code, as a user would paste it
    assert isinstance(namespace["model"], PeftModel)
    assert "default" in namespace["model"].peft_config


def test_real_base_model_usage_code_runs_and_names_the_revision(tmp_path):
    from tiny import tiny_model

    from steering_adapter import adapter_from_vectors, save_adapter

    base_dir = str(tmp_path / "base")
    tiny_model("llama").save_pretrained(base_dir)
    from transformers import AutoModelForCausalLM

    peft_model = adapter_from_vectors(AutoModelForCausalLM.from_pretrained(base_dir), {1: torch.randn(64)})
    folder = save_adapter(peft_model, tmp_path / "adapter")
    card = open(os.path.join(folder, "README.md")).read()
    assert "base_model" not in read_front_matter(card)  # a local folder is not a Hub id
    (code,) = _code_blocks(card)
    assert f'AutoModelForCausalLM.from_pretrained("{base_dir}")' in code and f'load_adapter("{folder}")' in code
    namespace: dict = {}
    exec(code.replace("tokenizer = AutoTokenizer.from_pretrained", "tokenizer = None and AutoTokenizer"), namespace)
    assert isinstance(namespace["model"], PeftModel)
    hub_card = render_model_card(_config(), adapter="org/no-political-refusal")
    (hub_code,) = _code_blocks(hub_card)
    assert 'AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-4B-Instruct-2507", revision="abc123")' in hub_code
    assert 'model.load_adapter("org/no-political-refusal")' in hub_code
    assert 'PeftModel.from_pretrained(base, "org/no-political-refusal")' in hub_code


def test_push_time_repo_id_replaces_the_folder_in_the_usage_code(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(_config()))
    path = write_model_card(str(tmp_path), evaluation={"markdown": "| set | kept |"})
    text = open(path).read().replace("## Intended use", "## Intended use\n\nA line the author added.")
    open(path, "w").write(text)
    set_card_repo_id(str(tmp_path), "org/pushed")
    card = open(path).read()
    (code,) = _code_blocks(card)
    assert '"org/pushed"' in code and str(tmp_path) not in code
    assert "| set | kept |" in card and "A line the author added." in card


def test_peft_save_pretrained_keeps_our_card(tmp_path):
    """PEFT's save_pretrained writes its blank template card, or rewrites tags / base_model of an existing one."""
    from tiny import tiny_model

    from steering_adapter import adapter_from_vectors

    peft_model = adapter_from_vectors(tiny_model("llama"), {1: torch.randn(64)}, steering_metadata={"method": "md"})
    peft_model.peft_config["default"].base_model_name_or_path = "Qwen/Qwen3-4B-Instruct-2507"
    for target in (tmp_path / "fresh", tmp_path / "again"):
        peft_model.save_pretrained(target)
        if target.name == "fresh":
            peft_model.save_pretrained(target)  # a second save into the folder that holds our card
        card = (target / "README.md").read_text()
        front = read_front_matter(card)
        assert front["base_model"] == "Qwen/Qwen3-4B-Instruct-2507"
        assert {"steering", "steering-adapter", "peft"} <= set(front["tags"])
        assert "## How to use" in card and "| method | md |" in card
        assert "[More Information Needed]" not in card  # PEFT's blank template
