"""Resumable stage folders: fingerprints of a stage's inputs, folders moved aside when they change."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steering_adapter.utils.records import atomic_write_json, json_safe, stable_key

if TYPE_CHECKING:
    from steering_adapter.directions.conditions import ConditionFit

__all__ = ["STAGE_FILE", "fingerprint", "gate_key", "stage_dir", "tensor_digest"]


def fingerprint(*parts: Any) -> str:
    """A short, stable key of ``parts`` (:func:`~steering_adapter.utils.records.stable_key`, the records' own key;
    values
    JSON cannot hold, such as paths, by their ``str``)."""
    return stable_key(*json_safe(json.loads(json.dumps(parts, default=str))))[:16]


def tensor_digest(tensors: dict[Any, torch.Tensor]) -> str:
    """Hash of the exact values of named tensors (for stage fingerprints)."""
    digest = hashlib.sha256()
    for name in sorted(tensors, key=str):
        digest.update(str(name).encode())
        digest.update(tensors[name].detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


STAGE_FILE = "stage.json"


def stage_dir(path: Path, fingerprint: str, log: Callable[[str], None]) -> Path:
    """The folder of a resumable stage whose records depend on ``fingerprint`` (vectors, gate, prompts, settings).

    The answer records are keyed by prompt and sampling settings only (see
    :mod:`steering_adapter.measure.scored_runs`), so a
    folder written for other vectors or another gate must not be resumed: it is moved aside to
    ``<name>.stale-<old fingerprint>`` (nothing is deleted) and the stage starts afresh.

    Returns:
        ``path``, existing, with ``stage.json`` recording ``fingerprint``.
    """
    marker = path / STAGE_FILE
    if path.exists():
        old = json.loads(marker.read_text()).get("fingerprint") if marker.is_file() else None
        if old == fingerprint:
            return path
        if old is not None or any(path.iterdir()):
            aside = path.with_name(f"{path.name}.stale-{old or 'unknown'}")
            if aside.exists():
                aside = path.with_name(f"{aside.name}-{time.strftime('%Y%m%dT%H%M%S')}")
            path.rename(aside)
            log(f"[resume] {path} was computed for other vectors or settings; moved to {aside.name}, starting afresh")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"fingerprint": fingerprint})
    return path


def gate_key(condition: ConditionFit | None) -> Any:
    """What identifies a gate in the stage fingerprints (``None`` without one)."""
    if condition is None:
        return None
    return (tensor_digest({"condition": condition.direction}), condition.config_fields())
