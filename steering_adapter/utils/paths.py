"""Paths a user names, checked before any work starts: names that can only be folders, and folders to write into.

Every check raises with one line that names the recipe key or command-line option the path came from.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

__all__ = ["check_output_dir", "looks_like_path"]


def looks_like_path(name: str) -> bool:
    """Whether ``name`` can only mean a local path, never a Hub repo id.

    It does when it is absolute, starts with ``.`` or ``~``, holds a backslash or more than one ``/``, ends with
    ``/``, or otherwise breaks the Hub's repo-id rules (``org/name`` or ``name``: letters, digits, ``-``, ``_``,
    ``.``; at most 96 characters).

    Args:
        name: a model or adapter name as the user gave it.

    Returns:
        ``True`` when a missing ``name`` is a missing folder rather than a Hub repo to look up.
    """
    if os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.endswith("/"):
        return True
    if name.count("/") > 1:
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def check_output_dir(path: str | os.PathLike, option: str) -> None:
    """Make sure ``path`` is, or can become, a folder to write into (nothing is created).

    Args:
        path: the output folder.
        option: the recipe key or command-line option that named it (``--out``, ``recipe.output.dir``).

    Raises:
        ValueError: ``path`` is an existing file, lies below a file, or its nearest existing folder is not writable
            (one line naming ``option``).
    """
    target = Path(path).expanduser()
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{option}: {path} is an existing file, not a folder; give a folder to write into")
        if not os.access(target, os.W_OK | os.X_OK):
            raise ValueError(f"{option}: folder {path} is not writable")
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{option}: cannot create folder {path}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: cannot create folder {path}: {ancestor} is not writable")
