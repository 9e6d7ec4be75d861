"""Publishing steering adapters to the Hugging Face Hub (or any Hub-compatible endpoint)."""

from __future__ import annotations

import os

from huggingface_hub import HfApi, constants

from steering_adapter.adapter.cards import set_card_repo_id
from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.files import CONFIG_NAME, WEIGHTS_NAME, read_config_dict


class HubUnreachableError(ConnectionError):
    """The Hub endpoint (``HF_ENDPOINT``) could not be reached; the message names it."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection-level errors (huggingface_hub's client: httpx2, or httpx)."""
    try:
        from httpx2 import TransportError  # lazy: huggingface_hub's transport, httpx2 or httpx, is known at call time
    except ImportError:  # pragma: no cover - older huggingface_hub
        from httpx import TransportError  # lazy: huggingface_hub's transport, httpx2 or httpx, is known at call time
    return (TransportError, ConnectionError, TimeoutError)


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

    The folder is checked first: it must hold ``adapter_config.json`` (a valid ``STEERING`` config) and
    ``adapter_model.safetensors``. The card's usage code is pointed at ``repo_id`` (a card is written from the
    config when ``README.md`` is missing).

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
        ValueError: not a valid steering adapter folder.
        HubUnreachableError: the Hub endpoint could not be reached (the message names it and ``HF_ENDPOINT``).
    """

    adapter_dir = os.fspath(adapter_dir)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not os.path.isfile(os.path.join(adapter_dir, name)):
            raise ValueError(f"{adapter_dir} is not a steering adapter folder: {name} is missing")
    config = read_config_dict(adapter_dir)
    if config.get("peft_type") != "STEERING":
        raise ValueError(f"{adapter_dir} holds a {config.get('peft_type')!r} adapter, not a STEERING adapter")
    SteeringConfig.from_peft_type(**config)  # validates every field
    set_card_repo_id(adapter_dir, repo_id)
    api = HfApi(token=token)
    message = commit_message or f"steering adapter: layers {config['layers']}, scale {config['scale']}"
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
