"""Where a model or adapter the user names comes from, checked before any work starts.

A name is an embedded model (``organism``), a local folder, or a Hub repo id. :func:`resolve_source` tells them apart
and fails in one line naming the recipe key or option when none fits:

- a name that can only be a path (:func:`~steering_adapter.utils.paths.looks_like_path`) and does not exist is
  "no such folder" (never a Hub repo-id error);
- a Hub id is looked up in the local Hugging Face cache first; when ``HF_HUB_OFFLINE`` is set, or one quick probe
  (:func:`~steering_adapter.adapter.hub.hub_unreachable_reason`, no retries) finds the endpoint (``HF_ENDPOINT``)
  unreachable, a cached copy is loaded with ``local_files_only=True`` and a missing one is a
  :class:`~steering_adapter.adapter.hub.HubUnreachableError` at once, instead of the clients' tens of seconds of
  retries per file and a chained traceback.

:func:`hub_errors_as_one_line` turns what the Hub answers while loading (no such repo, revision, gated repo, a
connection lost) into the same one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, Literal

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from steering_adapter.adapter.hub import HubUnreachableError, hub_unreachable_reason
from steering_adapter.models.embedded import is_embedded
from steering_adapter.utils.paths import looks_like_path

__all__ = ["PROBE_MEMORY_SECONDS", "PROBE_TIMEOUT_SECONDS", "hub_errors_as_one_line", "probe_hub", "resolve_source"]

PROBE_TIMEOUT_SECONDS = 5.0
"""How long the reachability probe waits for the endpoint's answer."""
PROBE_MEMORY_SECONDS = 60.0
"""How long a probe's answer is reused (the checks before work and the loading itself ask once)."""

_FIRST_FILE = {"model": "config.json", "adapter": "adapter_config.json"}
_probes: dict[str, tuple[float, str | None]] = {}


def probe_hub() -> str | None:
    """:func:`~steering_adapter.adapter.hub.hub_unreachable_reason` for the current endpoint, remembered for
    :data:`PROBE_MEMORY_SECONDS`."""
    endpoint, now = constants.ENDPOINT, time.monotonic()
    seen = _probes.get(endpoint)
    if seen is None or now - seen[0] > PROBE_MEMORY_SECONDS:
        seen = (now, hub_unreachable_reason(PROBE_TIMEOUT_SECONDS))
        _probes[endpoint] = seen
    return seen[1]


def _cached(repo_id: str, filename: str, revision: str | None) -> bool:
    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def resolve_source(
    name: str, *, key: str, kind: Literal["model", "adapter"] = "model", revision: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The name to load a model or adapter by, and the Hub keyword arguments to load it with.

    Args:
        name: ``model.name_or_path``, ``--model``, ``--adapter``, ... as the user gave it.
        key: the recipe key or option that named it, for the messages.
        kind: ``"model"`` (an embedded model is accepted; ``config.json`` marks a cached copy) or ``"adapter"``
            (``adapter_config.json``).
        revision: the Hub revision to look for in the cache.

    Returns:
        ``(name, hub_kwargs)``: a ``~`` path expanded; ``{"local_files_only": True}`` when the Hub is offline or
        unreachable and the cache holds the repo, else ``{}``.

    Raises:
        FileNotFoundError: a path that does not exist (``<key>: no such folder '<name>'``).
        ValueError: a path that is a file, or a model folder without ``config.json``.
        HubUnreachableError: a Hub id that is not cached while ``HF_HUB_OFFLINE`` is set or the endpoint cannot be
            reached (names ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``).
    """
    if kind == "model" and is_embedded(name):
        return name, {}
    local = os.path.expanduser(name)
    if os.path.isdir(local):
        if kind == "model" and not os.path.isfile(os.path.join(local, _FIRST_FILE[kind])):
            raise ValueError(f"{key}: {name} is a folder without {_FIRST_FILE[kind]}, not a transformers model folder")
        return local, {}
    if os.path.exists(local):
        raise ValueError(f"{key}: {name} is a file; a {kind} is a folder or a Hub repo id")
    if looks_like_path(name):
        raise FileNotFoundError(f"{key}: no such folder {name!r} (and it cannot be a Hub repo id)")
    cached = _cached(name, _FIRST_FILE[kind], revision)
    where = f"the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if constants.is_offline_mode():
        if cached:
            return name, {"local_files_only": True}
        raise HubUnreachableError(
            f"{key}: {name!r} is not a local folder and not in {where}, and HF_HUB_OFFLINE is set, so the Hub "
            f"({constants.ENDPOINT}, from HF_ENDPOINT) is not asked; unset HF_HUB_OFFLINE or download it first"
        )
    reason = probe_hub()
    if reason is None:
        return name, {}
    if cached:
        return name, {"local_files_only": True}
    raise HubUnreachableError(
        f"{key}: {name!r} is not a local folder, not in {where}, and the Hub cannot be reached at "
        f"{constants.ENDPOINT} ({reason}); set HF_ENDPOINT to a reachable Hub, or download it once while online "
        "(HF_HUB_OFFLINE=1 then loads the cached copy without asking the Hub)"
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def hub_errors_as_one_line(name: str, key: str) -> Iterator[None]:
    """Turn the errors of loading ``name`` (a transformers / PEFT / huggingface_hub call) into one line naming ``key``.

    Raises:
        ValueError: no such repo, revision or file, a gated repo, or the loader's own ``OSError`` or several-line
            ``ValueError`` (a folder without the tokenizer's files, ...), its message on one line.
        HubUnreachableError: the connection failed while loading (names the endpoint and ``HF_ENDPOINT``).
    """
    try:
        yield
    except HubUnreachableError:
        raise
    except Exception as error:
        for cause in _chain(error):
            if isinstance(cause, GatedRepoError):
                raise ValueError(f"{key}: {name!r} is a gated Hub repo; accept its terms and set HF_TOKEN") from None
            if isinstance(cause, RevisionNotFoundError):
                raise ValueError(f"{key}: the Hub repo {name!r} has no such revision") from None
            if isinstance(cause, RepositoryNotFoundError):
                raise ValueError(
                    f"{key}: {name!r} is not a local folder and the Hub at {constants.ENDPOINT} has no such repo "
                    "(a private repo needs HF_TOKEN)"
                ) from None
            if isinstance(cause, LocalEntryNotFoundError):
                raise HubUnreachableError(
                    f"{key}: some files of {name!r} are not in the local Hugging Face cache and the Hub "
                    f"({constants.ENDPOINT}, from HF_ENDPOINT) cannot be asked (unreachable, or HF_HUB_OFFLINE is set)"
                ) from None
            transport = any(kind.__name__ == "TransportError" for kind in type(cause).__mro__)  # httpx2 / httpx
            if transport or isinstance(cause, (ConnectionError, TimeoutError)):
                raise HubUnreachableError(
                    f"{key}: lost the Hub at {constants.ENDPOINT} (from HF_ENDPOINT) while loading {name!r}: "
                    f"{type(cause).__name__}"
                ) from None
        if isinstance(error, OSError) or (isinstance(error, ValueError) and "\n" in str(error).strip()):
            raise ValueError(f"{key}: {' '.join(str(error).split())}") from None
        raise
