"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
from cli_inputs import MODEL_LOADERS


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a model (errors must come before)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    for target in MODEL_LOADERS:
        monkeypatch.setattr(target, refuse)
