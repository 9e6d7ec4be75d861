"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
from cli_inputs import MODEL_LOADERS, refuse_calls


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a model (errors must come before)."""

    def refuser(target):
        def refuse(*args, **kwargs):
            raise AssertionError("the model was loaded before the error")

        return refuse

    refuse_calls(monkeypatch, MODEL_LOADERS, refuser)
