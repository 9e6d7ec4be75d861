"""The README written beside every export: what it is, how to use it, and where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def write_export_readme(
    folder: str | Path,
    provenance: dict[str, Any],
    *,
    title: str,
    how: str,
    usage: str,
    front_matter: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/README.md``.

    Args:
        folder: the export's folder.
        provenance: :meth:`SteeringSource.provenance` (plus format-specific fields), shown as JSON.
        title: first heading.
        how: one paragraph on how the steering is represented.
        usage: a Markdown code block showing how to load it.
        front_matter: Hub YAML front matter (``None`` values are dropped); ``tags`` get ``steering``.

    Returns:
        The README's path.
    """
    front = {key: value for key, value in (front_matter or {}).items() if value}
    front["tags"] = ["steering", "steering-adapter", "refusal-steering"]
    text = (
        "---\n"
        + yaml.safe_dump(front, sort_keys=False)
        + "---\n\n"
        + f"# {title}\n\n"
        + f"Exported from the steering adapter `{provenance['source_adapter']}` "
        + f"(base model `{provenance['base_model']}`, layers {provenance['layers']}, α = {provenance['scale']:g}, "
        + f"vector units `{provenance['vector_units']}`).\n\n"
        + f"{how}\n\n## How to use\n\n{usage}\n\n## Provenance\n\n```json\n"
        + json.dumps(provenance, indent=2, sort_keys=True)
        + "\n```\n"
    )
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
