"""Publish a steering adapter folder to the Hugging Face Hub, then check the upload by reading it back.

    python examples/publish_adapter.py runs/no-political-refusal/adapter your-org/no-political-refusal [--private]

Log in first (`hf auth login`, or set HF_TOKEN). To try it without the real Hub, point the client at any
Hub-compatible server before anything imports huggingface_hub: `HF_ENDPOINT=http://127.0.0.1:8080 python ...`.
The folder is validated (a STEERING config and adapter_model.safetensors; a model card is written from the config
when README.md is missing), uploaded, and its config and card are downloaded again and compared with the local ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from huggingface_hub import hf_hub_download

from steering_adapter import push_adapter
from steering_adapter.adapter.cards import read_front_matter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter_dir", help="a folder written by save_adapter / steering-adapter run (…/adapter)")
    parser.add_argument("repo_id", help="target model repo, org/name (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    args = parser.parse_args()

    url = push_adapter(args.adapter_dir, args.repo_id, private=args.private)
    print(f"pushed: {url}")

    remote = json.loads(Path(hf_hub_download(args.repo_id, "adapter_config.json")).read_text())
    local = json.loads((Path(args.adapter_dir) / "adapter_config.json").read_text())
    if remote != local:
        raise SystemExit("the uploaded adapter_config.json differs from the local one")
    front = read_front_matter(Path(hf_hub_download(args.repo_id, "README.md")).read_text())
    print(f"checked: config identical; card front matter base_model={front.get('base_model')!r}, tags={front['tags']}")
    print("load it with:")
    print("    import steering_adapter")
    print(f'    model.load_adapter("{args.repo_id}")   # or PeftModel.from_pretrained(model, "{args.repo_id}")')


if __name__ == "__main__":
    main()
