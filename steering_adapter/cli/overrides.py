"""``--set KEY.PATH=VALUE``: parse an override and apply it to a parsed recipe dict before the schema validates it."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

import yaml

__all__ = ["apply_overrides", "parse_override"]

_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``a.b[2].c=VALUE`` -> (``["a", "b", 2, "c"]``, the YAML value)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY.PATH=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    path: list[str | int] = []
    for part in key.split("."):
        match = _KEY_PART.fullmatch(part)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"--set {key!r}: expected KEY.PATH like 'sampling.k' or 'prompts.evaluation[0].source'"
            )
        path.append(match.group(1))
        path += [int(index) for index in re.findall(r"\d+", match.group(2))]
    return path, yaml.safe_load(value)


def _path_text(path: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def apply_overrides(data: dict[str, Any], overrides: Sequence[tuple[Sequence[str | int], Any]]) -> dict[str, Any]:
    """Set ``a.b[1].c = value`` entries in a parsed recipe dict (validated afterwards by the schema).

    Missing mapping keys are created; list items must exist.
    """
    for path, value in overrides:
        node: Any = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = _path_text(path[: depth + 1])
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise ValueError(f"--set {_path_text(path)}: {_path_text(path[:depth])} is not a list")
                if not 0 <= part < len(node):
                    raise ValueError(f"--set {_path_text(path)}: {where} does not exist (the list has {len(node)})")
            elif not isinstance(node, dict):
                raise ValueError(f"--set {_path_text(path)}: {_path_text(path[:depth])} is not a mapping")
            if last:
                node[part] = value
            elif isinstance(part, int):
                node = node[part]
            else:
                node = node.setdefault(part, [] if isinstance(path[depth + 1], int) else {})
    return data
