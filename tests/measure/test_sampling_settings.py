"""SamplingSettings mirrors sample_answers' sampling keywords (names and defaults), so the records' keys cannot drift
from what sampling does; unknown and non-JSON settings are refused with a message naming them."""

from __future__ import annotations

import inspect
import math

import pytest

from steering_adapter.measure.sampling import SamplingSettings, sample_answers
from steering_adapter.utils.records import stable_key

# keywords of sample_answers that do not change which answers are sampled
NOT_SETTINGS = {"batch_size", "progress", "prompt_ids"}


def test_fields_and_defaults_are_sample_answers_keywords():
    keywords = {
        name: parameter.default
        for name, parameter in inspect.signature(sample_answers).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in NOT_SETTINGS
    }
    assert SamplingSettings().to_dict() == keywords


def test_overrides_replace_defaults_and_key_order_is_irrelevant():
    settings = SamplingSettings.from_kwargs(k=2, temperature=0.2, system_prompt="Be brief.").to_dict()
    assert settings["k"] == 2 and settings["temperature"] == 0.2 and settings["system_prompt"] == "Be brief."
    assert settings["top_p"] == 1.0 and settings["max_new_tokens"] == 128
    shuffled = dict(reversed(list(settings.items())))
    assert stable_key("prompt", "Hi", settings) == stable_key("prompt", "Hi", shuffled)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match=r"unknown sampling settings \['temprature'\]"):
        SamplingSettings.from_kwargs(temprature=0.5)


@pytest.mark.parametrize("generate_kwargs", [{"logits_processor": object()}, {"x": math.nan}])
def test_non_json_settings_are_refused(generate_kwargs):
    with pytest.raises(ValueError, match="plain JSON values"):
        SamplingSettings(generate_kwargs=generate_kwargs).to_dict()
