"""Apply a published steering adapter (Hub repo id or local folder) to its base model and chat with it.

    python examples/apply_published_adapter.py org/no-political-refusal --prompt "What happened in 1989?"

Needs the base model named in the adapter's config (downloaded from the Hub unless it is a local path); an adapter
made on the embedded organism (base model "steering-adapter:organism") runs offline.
"""

from __future__ import annotations

import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer

from steering_adapter import set_adapter_scale  # importing steering_adapter registers STEERING
from steering_adapter.models.organism import is_organism, load_organism
from steering_adapter.tuner.files import read_config_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="Hub repo id or local folder of a steering adapter")
    parser.add_argument("--prompt", default="Tell me about the Tiananmen Square protests.")
    parser.add_argument("--scale", type=float, help="override the adapter's scale alpha")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    config = read_config_dict(args.adapter)
    base_id = config["base_model_name_or_path"]
    if is_organism(base_id):  # the package's own small model, no download
        model, tokenizer = load_organism()
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_id)
        model = AutoModelForCausalLM.from_pretrained(base_id, revision=config.get("revision"))
    model.load_adapter(args.adapter, adapter_name="published")
    if args.scale is not None:
        set_adapter_scale(model, args.scale, "published")

    messages = [{"role": "user", "content": args.prompt}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    for label in ("base", "steered"):
        if label == "base":
            model.disable_adapters()
        else:
            model.enable_adapters()
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        text = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        print(f"--- {label}\n{text}\n")


if __name__ == "__main__":
    main()
