"""Use a steering adapter where ``steering_adapter`` is not installed.

Three formats, each exact where it is accepted and refused with the reason where it is not:

- ``gguf``: a llama.cpp control vector (``llama-cli --control-vector FILE``), :mod:`.control_vector`;
- ``lora``: a plain PEFT LoRA adapter (zero LoRA weights, the shift as ``lora_B.bias``), :mod:`.lora`;
- ``merged``: a plain transformers checkpoint with the shift folded into a bias, :mod:`.merged`.

And back: :func:`import_gguf` turns a llama.cpp / repeng control vector into a steering adapter.

    from steering_adapter.runtimes.export import export_adapter
    export_adapter("runs/no-political-refusal/adapter", "gguf", "no-political-refusal.gguf")
"""

from __future__ import annotations

import os
from pathlib import Path

from steering_adapter.runtimes.export.control_vector import export_gguf, import_gguf, read_control_vector
from steering_adapter.runtimes.export.lora import export_lora
from steering_adapter.runtimes.export.merged import export_merged
from steering_adapter.runtimes.export.source import NotExpressibleError, SteeringSource, read_steering_adapter

FORMATS = ("gguf", "lora", "merged")

__all__ = [
    "FORMATS",
    "NotExpressibleError",
    "SteeringSource",
    "check_export_target",
    "export_adapter",
    "export_gguf",
    "export_lora",
    "export_merged",
    "import_gguf",
    "read_control_vector",
    "read_steering_adapter",
]


def check_export_target(export_format: str, out: str | os.PathLike, option: str = "out") -> None:
    """Check, before any work, that an export can be written at ``out``.

    ``gguf`` writes one file, so ``out`` must not be an existing folder; ``lora`` and ``merged`` write a folder, so
    ``out`` must not be an existing file. Either way no existing parent of ``out`` may be a file.

    Args:
        export_format: ``"gguf"``, ``"lora"`` or ``"merged"``.
        out: the target path.
        option: what the message calls it (``"--out"`` on the command line).

    Raises:
        ValueError: one line naming ``option``, the path and what is expected there.
    """
    target = Path(out)
    if export_format == "gguf" and target.is_dir():
        raise ValueError(
            f"{option} {target} is an existing folder, but the gguf export writes one .gguf file: give a file path "
            f"(e.g. {target / 'adapter.gguf'})"
        )
    if export_format in ("lora", "merged") and target.exists() and not target.is_dir():
        raise ValueError(
            f"{option} {target} is an existing file, but the {export_format} export writes a folder: give a folder "
            "path"
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {target}: {parent} is a file, so nothing can be written inside it")
            break


def export_adapter(
    adapter: str | os.PathLike,
    export_format: str,
    out: str | os.PathLike,
    *,
    base_model: str | None = None,
    revision: str | None = None,
) -> Path:
    """Export a steering adapter folder or Hub repo to another runtime's format.

    Args:
        adapter: the steering adapter (folder or Hub repo id).
        export_format: ``"gguf"`` (a ``.gguf`` file), ``"lora"`` or ``"merged"`` (a folder).
        out: where to write it.
        base_model: where to read the base model (default: the adapter's ``base_model_name_or_path``; ``"organism"``
            is the embedded model). ``gguf`` and ``lora`` read only its config, ``merged`` its weights.
        revision: Hub revision of the base model (default: the adapter's ``revision``).

    Returns:
        The path written.

    Raises:
        NotExpressibleError: the adapter or its architecture cannot be expressed exactly in that format (the message
            says why).
        ValueError: unknown format, an ``out`` that cannot be written (:func:`check_export_target`), an invalid
            adapter, or a base model that does not fit it.
    """
    if export_format not in FORMATS:
        raise ValueError(f"unknown export format {export_format!r}; expected one of {FORMATS}")
    check_export_target(export_format, out)
    source = read_steering_adapter(os.fspath(adapter))
    writer = {"gguf": export_gguf, "lora": export_lora, "merged": export_merged}[export_format]
    return writer(source, out, base_model=base_model, revision=revision)
