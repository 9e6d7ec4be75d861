"""Load exported LoRA adapters and merged checkpoints with stock transformers + PEFT only, and save their logits.

Run as a script in a fresh interpreter (the tests do): ``python stock_runtime.py JOBS.json OUT.safetensors``.
JOBS.json is a list of ``{"name", "format": "lora"|"merged", "base", "export", "input_ids"}``. It never imports
steering_adapter, and fails if anything did. Also writes OUT.json with each export's provenance as a stock reader
sees it (safetensors metadata of the LoRA, ``config.steering_export`` of the merged checkpoint).
"""

from __future__ import annotations

import json
import sys

import torch
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def main(jobs_path: str, out_path: str) -> None:
    with open(jobs_path, encoding="utf-8") as handle:
        jobs = json.load(handle)
    logits: dict[str, torch.Tensor] = {}
    provenance: dict[str, dict] = {}
    for job in jobs:
        if job["format"] == "lora":
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(job["base"]), job["export"])
            with safe_open(f"{job['export']}/adapter_model.safetensors", "pt") as weights:
                provenance[job["name"]] = json.loads(weights.metadata()["steering_export"])
        else:
            model = AutoModelForCausalLM.from_pretrained(job["export"])
            provenance[job["name"]] = model.config.steering_export
        model.eval()
        with torch.no_grad():
            logits[job["name"]] = model(torch.tensor(job["input_ids"])).logits.float().contiguous()
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "steering_adapter")
    if loaded:
        raise SystemExit(f"steering_adapter was imported: {loaded}")
    save_file(logits, out_path)
    with open(out_path.removesuffix(".safetensors") + ".json", "w", encoding="utf-8") as handle:
        json.dump(provenance, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
