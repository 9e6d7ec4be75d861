"""Commands on an adapter's files: ``push`` (to the Hub), ``inspect`` (its config), ``export`` (to llama.cpp, stock
PEFT or plain transformers) and ``import-gguf`` (a llama.cpp / repeng control vector as a steering adapter)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steering_adapter.adapter.hub import push_adapter
from steering_adapter.cli.exit_codes import EXIT_OK
from steering_adapter.runtimes.export import check_export_target, export_adapter, import_gguf
from steering_adapter.tuner.files import read_config_dict
from steering_adapter.tuner.validation import describe_adapter, validate_adapter_folder

__all__ = ["cmd_export", "cmd_import_gguf", "cmd_inspect", "cmd_push"]


def cmd_push(args: argparse.Namespace) -> int:
    print(push_adapter(args.adapter_dir, args.repo_id, private=args.private, token=args.token))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print ``adapter_config.json`` and a last line with the loaders' verdict on the adapter.

    The verdict is ``ok: ...`` or ``invalid: <problem>``; with ``--check`` an invalid adapter is an error instead
    (one line on stderr, exit code 2).
    """
    print(json.dumps(read_config_dict(args.adapter), indent=2, sort_keys=True))
    try:
        config = validate_adapter_folder(args.adapter)
    except (ValueError, FileNotFoundError) as exc:
        if args.check:
            raise
        problem = " ".join(str(exc).split())
        print(f"invalid: {problem} (every loader refuses this adapter; `inspect --check` exits 2 on it)")
        return EXIT_OK
    print(f"ok: {describe_adapter(config)}; adapter_config.json and adapter_model.safetensors pass the load checks")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    check_export_target(args.format, args.out, option="--out")
    path = export_adapter(args.adapter, args.format, args.out, base_model=args.base, revision=args.revision)
    print(f"wrote {args.format} export: {path}")
    return EXIT_OK


def cmd_import_gguf(args: argparse.Namespace) -> int:
    out = args.out or str(Path(args.file).with_suffix("")) + "-steering-adapter"
    path = import_gguf(args.file, args.base, out, revision=args.revision, scale=args.scale)
    print(f"wrote steering adapter: {path}")
    return EXIT_OK
