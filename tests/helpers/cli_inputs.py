"""Pieces the CLI bad-input tests share: a minimal recipe, the model loaders a refused input must not reach (and a
safe way to refuse them), an unused local port (an unreachable Hub or judge endpoint) and a config editor for saved
adapters."""

from __future__ import annotations

import importlib
import json
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# A recipe with a target and a harmful set of the organism: enough for every check that runs before the model loads.
MINIMAL_RECIPE = {
    "name": "t",
    "prompts": {
        "refusal": ["organism:political"],
        "compliance": ["organism:benign"],
        "evaluation": [
            {"name": "p", "source": "organism:political", "role": "target"},
            {"name": "h", "source": "organism:harmful", "role": "harmful"},
        ],
    },
}

# Every way a command loads a model: an input refused "before the model loads" must reach none of them.
MODEL_LOADERS = (
    "steering_adapter.run.pipeline.load_model",
    "steering_adapter.run.stages.load.load_model",
    "steering_adapter.cli.model_loading.load_model",
)


def refuse_calls(monkeypatch: Any, targets: Iterable[str], refuser: Callable[[str], Callable[..., Any]]) -> None:
    """Patch every dotted ``module.function`` of ``targets`` with ``refuser(target)`` for one test.

    Every module is imported before the first patch: a module first imported while another module's function is
    patched binds the patched function at import (``from … import load_model``), monkeypatch's undo then "restores"
    that for the rest of the session, and a later test that loads a model fails far from the cause."""
    targets = list(targets)
    for target in targets:
        importlib.import_module(target.rpartition(".")[0])
    for target in targets:
        monkeypatch.setattr(target, refuser(target))


def unused_port() -> int:
    """A local TCP port nothing listens on (the OS hands it out, the socket is closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def edit_config(folder: Path, **changes: Any) -> Path:
    """Change keys of ``folder/adapter_config.json`` (``None`` removes a key); returns ``folder``."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return folder
