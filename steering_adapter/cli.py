"""The ``steering-adapter`` console script."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``steering-adapter`` command; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="steering-adapter", description="Refusal steering vectors as shareable PEFT adapters."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="print an adapter's configuration (local folder or Hub repo id)")
    inspect.add_argument("adapter", help="adapter folder or Hub repo id")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        from .adapter_files import read_config_dict

        print(json.dumps(read_config_dict(args.adapter), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
