"""Model cards (``README.md`` with Hub YAML front matter) for steering adapters, filled from their metadata."""

from __future__ import annotations

import json
import os
from importlib import resources
from string import Template
from typing import Any

import yaml

TEMPLATE_NAME = "steering_adapter_card.md"


def _template_text() -> str:
    return resources.files("steering_adapter.model_cards").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _gate_text(config: dict[str, Any], condition: dict[str, Any]) -> str:
    """One line describing the condition gate of an adapter config (and its held-out rates when recorded)."""
    text = (
        f"steers only prompts whose {config.get('condition_position', 'last')} block-{config['condition_layer']} "
        f"output projects {config.get('condition_comparator', 'greater')} than {config['condition_threshold']:.4g} "
        "on the condition direction"
    )
    if condition.get("method"):
        text += f" ({condition['method']})"
    if "heldout_tpr" in condition and "heldout_fpr" in condition:
        text += (
            f"; held-out: selects {100 * condition['heldout_tpr']:.1f} % of topic prompts, "
            f"{100 * condition['heldout_fpr']:.1f} % of others"
        )
    return text


def render_model_card(config: dict[str, Any], evaluation: dict[str, Any] | None = None) -> str:
    """Render the model card of an adapter from its ``adapter_config.json`` dict and an optional evaluation report.

    Returns:
        Markdown text with YAML front matter: ``base_model``, ``library_name: peft``, ``tags`` (including
        ``steering``), ``license``.
    """
    metadata = config.get("steering_metadata") or {}
    base = config.get("base_model_name_or_path")
    front: dict[str, Any] = {
        "library_name": "peft",
        "tags": ["steering", "steering-adapter", "refusal-steering", "peft"],
        "pipeline_tag": "text-generation",
    }
    if base:
        front["base_model"] = base
    if metadata.get("license"):
        front["license"] = metadata["license"]
    layers = config.get("layers", [])
    rows = [
        ("base model", f"`{base}`" + (f" @ `{config['revision']}`" if config.get("revision") else "")),
        ("method", str(metadata.get("method", "unspecified"))),
        ("ridge λ", "n/a" if metadata.get("ridge_lambda") is None else str(metadata["ridge_lambda"])),
        ("layers (0-based block outputs)", ", ".join(str(layer) for layer in layers)),
        ("scale α", str(config.get("scale"))),
        ("mode", str(config.get("mode", "add"))),
        ("hidden size / blocks", f"{config.get('hidden_size')} / {config.get('num_hidden_layers')}"),
    ]
    if config.get("condition_layer") is not None:
        rows.append(("gate", _gate_text(config, metadata.get("condition") or {})))
    judge = metadata.get("judge")
    if isinstance(judge, dict) and judge.get("kind"):
        rows.append(("judge", " ".join(str(judge[k]) for k in ("kind", "model") if judge.get(k))))
    elif judge is not None:
        rows.append(("judge", json.dumps(judge, sort_keys=True)))
    for key in ("datasets", "sample_counts"):
        if key in metadata:
            rows.append((key, json.dumps(metadata[key], sort_keys=True)))
    evaluation_text = "No evaluation report was attached when this adapter was saved."
    if evaluation:
        evaluation_text = evaluation.get("markdown") or "```json\n" + json.dumps(evaluation, indent=2) + "\n```"
    body = Template(_template_text()).safe_substitute(
        title=metadata.get("title") or f"Steering adapter for {base or 'a causal LM'}",
        summary=metadata.get("summary")
        or "A refusal-steering adapter: one vector per steered decoder block, added to the block output.",
        details_table=_table(rows),
        evaluation=evaluation_text,
        intended_use=metadata.get("intended_use") or "Research on and control of refusal behaviour.",
        limitations=metadata.get("limitations")
        or "Measured only on the prompt sets listed above; steering can shift behaviour on other inputs.",
        llama_cpp_directions=", ".join(str(layer) for layer in layers),
    )
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body


def write_model_card(adapter_dir: str, evaluation: dict[str, Any] | None = None) -> str:
    """Write ``README.md`` into an adapter folder from its ``adapter_config.json``; return the card's path."""
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    path = os.path.join(adapter_dir, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_model_card(config, evaluation))
    return path


def read_front_matter(card_text: str) -> dict[str, Any]:
    """Parse the YAML front matter of a model card (raises ``ValueError`` when it is missing or invalid)."""
    if not card_text.startswith("---\n"):
        raise ValueError("model card has no YAML front matter")
    end = card_text.find("\n---", 4)
    if end < 0:
        raise ValueError("model card front matter is not closed")
    data = yaml.safe_load(card_text[4:end])
    if not isinstance(data, dict):
        raise ValueError("model card front matter is not a mapping")
    return data
