"""Model cards (``README.md`` with Hub YAML front matter) for steering adapters, through ``huggingface_hub.ModelCard``.

The front matter is a :class:`huggingface_hub.ModelCardData`: ``library_name: peft``, ``tags`` (``steering``, ...),
``pipeline_tag``, ``license`` and ``base_model`` when the base model is a Hub id (it is left out for the embedded
embedded models and for local folders, which the Hub could not link). The usage code names the real base model and the
adapter's location: its folder when saved, its repo id once pushed (:func:`set_card_repo_id`, called by
``push_adapter``); it sits between ``<!-- steering-adapter:usage -->`` markers so that only it is rewritten.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from steering_adapter.models.embedded import TITLES, canonical_name, embedded_id, is_embedded
from steering_adapter.tuner.files import CONFIG_NAME, read_json_file

TEMPLATE_NAME = "model_card.md"
CARD_TAGS = ["steering", "steering-adapter", "refusal-steering", "peft"]
USAGE_START, USAGE_END = "<!-- steering-adapter:usage -->", "<!-- /steering-adapter:usage -->"

UNITS_TEXT = {
    "class_separation": (
        "Vector units: `class_separation`. Each vector is s·u, with u the unit direction and s the distance between "
        "the refused and the complied prompts' mean activations along u at that block, so α = −1 moves the refused "
        "prompts' mean onto the complied prompts' mean along the direction (on any model)."
    ),
    "raw": (
        "Vector units: `raw` (the estimator's closed form as is): the norm depends on the model and the ridge λ, so "
        "α has no portable meaning."
    ),
}


def _template_text() -> str:
    return resources.files("steering_adapter.adapter").joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8")


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def hub_base_model(name: str | None) -> str | None:
    """``name`` if it is a Hub model id the card can link as ``base_model``; ``None`` for embedded models, folders."""
    if not name or is_embedded(name) or os.path.isabs(name) or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


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


def usage_code(config: dict[str, Any], adapter: str) -> str:
    """Working Python for transformers and PEFT that loads this adapter onto its base model.

    Args:
        config: the adapter's ``adapter_config.json`` dict.
        adapter: where the adapter is: its Hub repo id, or its folder before it is pushed.

    Returns:
        A fenced ``python`` code block.
    """
    base = config.get("base_model_name_or_path")
    ref = json.dumps(str(adapter))
    if is_embedded(base):
        short = canonical_name(base)
        body = f"""import steering_adapter  # registers the STEERING adapter type with PEFT
from peft import PeftModel
from steering_adapter.models.embedded import load_embedded  # the base model, built locally by steering-adapter
from transformers import AutoModelForCausalLM

# transformers: the adapter names its base model ({embedded_id(base)}), resolved offline to the local model
model = AutoModelForCausalLM.from_pretrained({ref})
# transformers, onto a model you loaded
model, tokenizer = load_embedded({json.dumps(short)})
model.load_adapter({ref})
# PEFT
base, tokenizer = load_embedded({json.dumps(short)})
model = PeftModel.from_pretrained(base, {ref})"""
    elif base is None:
        body = f"""import steering_adapter  # registers the STEERING adapter type with PEFT
from peft import PeftModel

# the adapter config names no base model: load the model its vectors were computed on as `model`, then
model.load_adapter({ref})  # transformers
model = PeftModel.from_pretrained(model, {ref})  # or PEFT"""
    else:
        revision = config.get("revision")
        pin = f", revision={json.dumps(revision)}" if revision else ""
        name = json.dumps(base)
        body = f"""import steering_adapter  # registers the STEERING adapter type with PEFT
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({name}{pin})
# transformers
model = AutoModelForCausalLM.from_pretrained({name}{pin})
model.load_adapter({ref})
# PEFT
base = AutoModelForCausalLM.from_pretrained({name}{pin})
model = PeftModel.from_pretrained(base, {ref})"""
    return f"```python\n{body}\n```"


def card_data(config: dict[str, Any]) -> ModelCardData:
    """The card's front matter for an adapter config (see the module docstring)."""
    metadata = config.get("steering_metadata") or {}
    data = ModelCardData(
        library_name="peft",
        tags=list(CARD_TAGS),
        pipeline_tag="text-generation",
        license=metadata.get("license") or None,
        base_model=hub_base_model(config.get("base_model_name_or_path")),
    )
    return data


def render_model_card(
    config: dict[str, Any], evaluation: dict[str, Any] | None = None, adapter: str | None = None
) -> str:
    """Render the model card of an adapter from its ``adapter_config.json`` dict and an optional evaluation report.

    Args:
        config: the adapter's config dict.
        evaluation: ``{"markdown": ...}`` (or any JSON report) for the Evaluation section; an optional
            ``"comparison"`` (Markdown, :func:`~steering_adapter.measure.comparison.comparison_markdown`) goes first,
            under "Compared with the base model".
        adapter: where the adapter is (repo id or folder) for the usage code; default ``"."``.

    Returns:
        Markdown text with YAML front matter (see :func:`card_data`).
    """
    metadata = config.get("steering_metadata") or {}
    base = config.get("base_model_name_or_path")
    layers = config.get("layers", [])
    if is_embedded(base):
        short = canonical_name(base)
        base_text = f"`{embedded_id(base)}` ({TITLES[short]}: `load_embedded({short!r})`)"
    else:
        base_text = f"`{base}`" + (f" @ `{config['revision']}`" if config.get("revision") else "")
        if hub_base_model(base) is None:
            base_text += " (a local folder)"
    rows = [
        ("base model", base_text),
        ("method", str(metadata.get("method", "unspecified"))),
        ("ridge λ", "n/a" if metadata.get("ridge_lambda") is None else str(metadata["ridge_lambda"])),
        ("layers (0-based block outputs)", ", ".join(str(layer) for layer in layers)),
        ("scale α", str(config.get("scale"))),
        ("mode", str(config.get("mode", "add"))),
        ("hidden size / blocks", f"{config.get('hidden_size')} / {config.get('num_hidden_layers')}"),
    ]
    units = metadata.get("vector_units")
    if units:
        rows.append(("vector units", f"`{units}`"))
    if metadata.get("answer_scale"):
        rows.append(
            (
                "answer-token push ρ",
                f"{metadata['answer_scale']} (each vector is s·(û_prompt + ρ·û_answer): the "
                f"{metadata.get('position')} prompt direction plus a push ρ times as long along the direction fitted "
                "on the model's own answers)",
            )
        )
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
    card = ModelCard.from_template(
        card_data(config),
        template_str=_template_text(),
        title=metadata.get("title")
        or f"Steering adapter for {TITLES[canonical_name(base)] if is_embedded(base) else base}",
        summary=metadata.get("summary")
        or "A refusal-steering adapter: one vector per steered decoder block, added to the block output.",
        details_table=_table(rows),
        units_text=UNITS_TEXT.get(units, f"Vector units: `{units}`." if units else ""),
        evaluation=evaluation_text,
        comparison=(evaluation or {}).get("comparison"),
        usage=usage_code(config, adapter or "."),
        intended_use=metadata.get("intended_use") or "Research on and control of refusal behaviour.",
        limitations=metadata.get("limitations")
        or "Measured only on the prompt sets listed above; steering can shift behaviour on other inputs.",
        llama_cpp_directions=", ".join(str(layer) for layer in layers),
    )
    return str(card)


def write_model_card(adapter_dir: str, evaluation: dict[str, Any] | None = None, repo_id: str | None = None) -> str:
    """Write ``README.md`` into an adapter folder from its ``adapter_config.json``; return the card's path.

    Args:
        adapter_dir: the adapter folder.
        evaluation: optional evaluation report for the card.
        repo_id: the Hub repo id for the usage code (default: the folder itself, until ``push_adapter`` sets it).
    """

    config = read_json_file(os.path.join(adapter_dir, CONFIG_NAME))
    return write_model_card_from_config(adapter_dir, config, evaluation, repo_id)


def write_model_card_from_config(
    adapter_dir: str, config: dict[str, Any], evaluation: dict[str, Any] | None = None, repo_id: str | None = None
) -> str:
    """Write ``README.md`` into ``adapter_dir`` for ``config`` (see :func:`write_model_card`); return its path."""
    path = os.path.join(adapter_dir, "README.md")
    ModelCard(render_model_card(config, evaluation, adapter=repo_id or os.fspath(adapter_dir))).save(path)
    return path


def set_card_repo_id(adapter_dir: str, repo_id: str) -> str:
    """Point the usage code of an adapter's card at its Hub repo (the rest of the card, edits included, is kept).

    A folder without a card, or with a card that has no usage markers (not written by steering-adapter), gets a
    fresh card.

    Returns:
        The card's path.
    """

    path = os.path.join(adapter_dir, "README.md")
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    if USAGE_START not in text or USAGE_END not in text:
        return write_model_card(adapter_dir, repo_id=repo_id)
    usage = usage_code(read_json_file(os.path.join(adapter_dir, CONFIG_NAME)), repo_id)
    pattern = re.compile(re.escape(USAGE_START) + ".*?" + re.escape(USAGE_END), re.DOTALL)
    text = pattern.sub(lambda _: f"{USAGE_START}\n{usage}\n{USAGE_END}", text, count=1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
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


def merge_card_after_peft(path: str, config: dict[str, Any]) -> None:
    """Put back what PEFT's ``create_or_update_model_card`` changes in our card's front matter.

    PEFT replaces ``tags`` with its own and sets ``base_model`` to the loaded model's ``_name_or_path`` (a local
    folder for the organism); the card keeps our tags plus PEFT's, and our ``base_model`` rule.
    """
    card = ModelCard.load(path)
    ours = card_data(config)
    peft_tags = [tag for tag in card.data.tags or [] if not tag.startswith("base_model:adapter:") or ours.base_model]
    card.data.tags = list(dict.fromkeys([*CARD_TAGS, *peft_tags]))
    card.data.base_model = ours.base_model
    card.data.library_name = "peft"
    card.save(path)
