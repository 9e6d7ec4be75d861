"""Shared pytest configuration and fixtures for the test suite."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest
from hub_server import LocalHub  # tests/helpers/ is on sys.path (pyproject: pytest pythonpath)

# The vLLM tests run in their own environment (.venv-vllm, `pytest tests/runtimes/vllm_backend`; .ci/run runs them
# there).
# In an environment without vLLM they are not collected; where vLLM is installed, a failing import fails them.
collect_ignore = ["runtimes/vllm_backend"] if importlib.util.find_spec("vllm") is None else []

# ---------------------------------------------------------------------------------------------------------
# Hugging Face Hub environment
#
# huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET, ... exactly
# once, when `huggingface_hub.constants` is first imported, and copies them into module-level constants
# (transformers and peft rely on those constants too). Changing the environment afterwards, e.g. from a
# fixture or with `monkeypatch.setenv`, has no effect. pytest imports this conftest before it imports any
# test module, so this is the one place where the variables are guaranteed to be set before the first
# `import huggingface_hub`. Do not import huggingface_hub (or anything that imports it) above this block.
# ---------------------------------------------------------------------------------------------------------


def _free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a currently free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


LOCAL_HUB_PORT = _free_port()
LOCAL_HUB_URL = f"http://127.0.0.1:{LOCAL_HUB_PORT}"

_HF_HOME = tempfile.mkdtemp(prefix="steering-adapter-tests-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

os.environ.update(
    {
        "HF_ENDPOINT": LOCAL_HUB_URL,
        "HF_TOKEN": "hf_local_test_token",  # dummy: LocalHub accepts any token, never send a real one
        "HF_HOME": _HF_HOME,
        "HF_HUB_CACHE": os.path.join(_HF_HOME, "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        # LocalHub never asks for LFS/Xet uploads nor advertises Xet downloads; this is only a safety net so
        # that a code path that forces Xet fails fast instead of trying to reach a real CAS server.
        "HF_HUB_DISABLE_XET": "1",
        # "0" rather than unset: an inherited TRANSFORMERS_OFFLINE=1 would otherwise still switch the
        # client to offline mode.
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }
)
# Never route requests to the local hub through a proxy.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))


@pytest.fixture(scope="session")
def local_hub() -> Iterator[LocalHub]:
    """A `LocalHub` serving at ``HF_ENDPOINT`` for the whole session; the real client talks to it.

    Repos persist across tests: give each test its own repo name (e.g. with a uuid suffix).
    """
    from huggingface_hub import constants

    if constants.ENDPOINT != LOCAL_HUB_URL:
        pytest.fail(
            f"huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT (it uses "
            f"{constants.ENDPOINT!r}, expected {LOCAL_HUB_URL!r}); refusing to talk to a real Hub."
        )
    with LocalHub(port=LOCAL_HUB_PORT) as hub:
        yield hub


# ---------------------------------------------------------------------------------------------------------
# Tiny models shared by the test modules (no downloads)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded, and the test machine is shared (use with ``pytestmark``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny byte-level BPE tokenizer of tests/helpers/tiny.py."""
    from tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="module")
def llama():
    """A tiny random Llama from tests/helpers/tiny.py (hidden 64, 4 blocks)."""
    from tiny import tiny_model

    return tiny_model("llama")
