"""Model cards: valid Hub YAML front matter and the adapter's facts in the text."""

from __future__ import annotations

import json

import pytest
import yaml

from steering_adapter.cards import read_front_matter, render_model_card, write_model_card


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
    assert "$" not in card.split("---", 2)[2].replace("$ ", "")  # every template field was filled


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


def test_write_model_card_reads_the_saved_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(_config()))
    path = write_model_card(str(tmp_path))
    assert read_front_matter(open(path).read())["base_model"].startswith("Qwen/")


@pytest.mark.parametrize("text", ["no front matter", "---\nbase_model: x\n", "---\n- a list\n---\n"])
def test_bad_front_matter_is_an_error(text):
    with pytest.raises((ValueError, yaml.YAMLError)):
        read_front_matter(text)
