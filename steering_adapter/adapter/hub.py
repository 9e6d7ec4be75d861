"""Publishing steering adapters to the Hugging Face Hub (or any Hub-compatible endpoint)."""

from __future__ import annotations

import os

from huggingface_hub import HfApi, constants

from steering_adapter.adapter.cards import set_card_repo_id
from steering_adapter.tuner.files import CONFIG_NAME, WEIGHTS_NAME
from steering_adapter.tuner.validation import validate_adapter_folder


class HubUnreachableError(ConnectionError):
    """The Hub endpoint (``HF_ENDPOINT``) could not be reached; the message names it."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection-level errors (huggingface_hub's client: httpx2, or httpx)."""
    try:
        from httpx2 import TransportError  # lazy: huggingface_hub's transport, httpx2 or httpx, is known at call time
    except ImportError:  # pragma: no cover - older huggingface_hub
        from httpx import TransportError  # lazy: huggingface_hub's transport, httpx2 or httpx, is known at call time
    return (TransportError, ConnectionError, TimeoutError)


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hub endpoint (``HF_ENDPOINT``) cannot be reached, or ``None`` when it answers: one ``HEAD`` request,
    no retries, through huggingface_hub's own HTTP client (its proxies and certificates).

    Any HTTP answer counts as reachable except 502, 503 and 504 (a gateway or an overloaded Hub); a connection error
    or no answer within ``timeout`` seconds does not. huggingface_hub and transformers retry such errors for tens of
    seconds per file before failing.
    """
    from huggingface_hub.utils import get_session  # lazy: the shared client is built on first use

    try:
        status = get_session().head(constants.ENDPOINT, timeout=timeout).status_code
    except _transport_errors() as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no answer'}"
    return f"HTTP {status}" if status in (502, 503, 504) else None


def push_adapter(
    adapter_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a saved steering adapter folder to a Hub model repo (created if needed).

    The folder is checked first, before any network call, by the check every loader runs
    (:func:`~steering_adapter.tuner.validation.validate_adapter_folder`: ``adapter_config.json`` and
    ``adapter_model.safetensors``), so nothing a loader would refuse (a NaN vector, an extra tensor, a misspelt key)
    is uploaded. The card's usage code is pointed at ``repo_id`` (a card is written from the config when
    ``README.md`` is missing).

    Args:
        adapter_dir: folder written by :func:`steering_adapter.save_adapter` or ``PeftModel.save_pretrained``.
        repo_id: ``"org/name"``.
        private: create the repo as private.
        token: Hub token (defaults to the logged-in one / ``HF_TOKEN``).
        revision: branch to push to.
        commit_message: defaults to a message naming the layers and scale.

    Returns:
        The URL of the commit.

    Raises:
        ValueError: not a folder, or not a valid steering adapter folder (the message names the file and problem).
        HubUnreachableError: the Hub endpoint could not be reached (the message names it and ``HF_ENDPOINT``).
    """

    adapter_dir = os.fspath(adapter_dir)
    if not os.path.isdir(adapter_dir):  # checked first: a missing folder must not be looked up as a Hub repo id
        raise ValueError(f"{adapter_dir} is not a folder: push uploads a saved steering adapter folder")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not os.path.isfile(os.path.join(adapter_dir, name)):
            raise ValueError(f"{adapter_dir} is not a steering adapter folder: {name} is missing")
    config = validate_adapter_folder(adapter_dir)
    set_card_repo_id(adapter_dir, repo_id)
    api = HfApi(token=token)
    message = commit_message or f"steering adapter: layers {list(config.layers)}, scale {config.scale}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=adapter_dir,
            repo_id=repo_id,
            revision=revision,
            commit_message=message,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md", "*.json", "*.png"],
        )
    except _transport_errors() as exc:
        raise HubUnreachableError(
            f"cannot reach the Hub at {constants.ENDPOINT} (the endpoint comes from HF_ENDPOINT, default "
            f"https://huggingface.co): {type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None
    return info.commit_url
