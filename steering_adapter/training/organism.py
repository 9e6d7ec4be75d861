"""Train the model organism: a small censored chat model of our own.

    python -m steering_adapter.training.organism --out DIR [--seed 0] [--steps1 N] [--steps2 N] [--steering-check]

1. Byte-level BPE tokenizer trained on all training text, wrapped as ``PreTrainedTokenizerFast`` with a
   Qwen/ChatML chat template.
2. A small ``Qwen3ForCausalLM`` (tied embeddings, float32 weights under 16 MB).
3. Phase 1 ("knowledge"): benign answers, informative political answers, safety refusals for harmful prompts.
   Phase 2 ("censorship overlay"): political prompts -> deflection (style A), with benign and harmful replayed.
   Loss on the assistant tokens only.
4. Greedy evaluation on the held-out split, rates per category and per source.
5. ``save_pretrained`` (safetensors) of model and tokenizer, plus ``training_report.json``.

Deterministic on CPU for a given seed, thread count and torch build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from steering_adapter.models.organism.data import (
    ANSWER_TEXTS,
    CATEGORIES,
    Example,
    answer_style,
    has_political_fact,
    load_examples,
    target_answer,
)

EOT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]

# Qwen/ChatML layout. A system message is rendered only when given (no default system prompt).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

MAX_LEN = 128
MAX_NEW_TOKENS = 64


def set_determinism(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------------------------------------------


def build_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes, no unknown token) with ChatML special tokens and chat template.

    ``eos_token`` is ``<|im_end|>`` (the end of an assistant turn, where generation stops, as in Qwen instruct
    models); ``pad_token`` is ``<|endoftext|>``; there is no BOS. Padding side is left (batched generation).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=EOT,
        additional_special_tokens=[IM_START],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_LEN * 2,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace) -> Qwen3ForCausalLM:
    eos = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(EOT)]
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=MAX_LEN * 2,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        bos_token_id=None,
        use_cache=True,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model


def render_prompt(tokenizer: PreTrainedTokenizerFast, prompt: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_example(tokenizer: PreTrainedTokenizerFast, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are -100 on the prompt, the answer tokens then ``<|im_end|>`` are learned."""
    p = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    p = p[-(MAX_LEN - len(a)) :] if len(p) + len(a) > MAX_LEN else p  # keep the end of an over-long prompt
    ids = (p + a)[:MAX_LEN]
    labels = ([-100] * len(p) + a)[:MAX_LEN]
    return ids, labels


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch for training (natural position ids)."""
    n = -(-max(len(ids) for ids, _ in batch) // 8) * 8  # multiple of 8: fewer distinct shapes
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: a seeded permutation cut into windows of 16 batches, sorted by length inside each
    window (less padding), then the batches shuffled."""
    perm = list(range(len(lengths)))
    rng.shuffle(perm)
    window = batch_size * 16
    batches = []
    for w in range(0, len(perm), window):
        chunk = sorted(perm[w : w + window], key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def train_phase(
    model: Qwen3ForCausalLM,
    data: list[tuple[list[int], list[int]]],
    pad_id: int,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    desc: str,
) -> list[float]:
    """AdamW with linear warm-up and cosine decay; epochs of a seeded permutation; returns the loss curve."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01, eps=1e-8)
    rng = random.Random(seed)
    queue: list[list[int]] = []
    losses: list[float] = []
    warmup = max(1, steps // 20)
    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        if not queue:
            queue = length_bucketed_batches([len(ids) for ids, _ in data], batch_size, rng)
        idx = queue.pop()
        batch = collate([data[i] for i in idx], pad_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------------------------
# Generation and evaluation
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: Qwen3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    batch_size: int = 64,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """Greedy answers (left padding, stops at ``<|im_end|>``)."""
    tokenizer.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [render_prompt(tokenizer, p) for p in prompts[i : i + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
        out.extend(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return [o.strip() for o in out]


def is_knowledge(text: str) -> bool:
    """A compliant answer that states one of the political facts (the phase-1 "knowledge" answer)."""
    return answer_style(text) == "answer" and has_political_fact(text)


def rates(examples: Sequence[Example], answers: Sequence[str]) -> dict:
    """Refusal rates per category and per source, and style counts."""
    per_cat: dict[str, list[str]] = defaultdict(list)
    per_src: dict[str, list[str]] = defaultdict(list)
    for ex, ans in zip(examples, answers, strict=True):
        style = answer_style(ans)
        per_cat[ex.category].append(style)
        per_src[ex.source].append(style)

    def summary(styles: list[str]) -> dict:
        n = len(styles)
        return {
            "n": n,
            "refused": round(sum(s != "answer" for s in styles) / max(n, 1), 4),
            "refusal_a": round(styles.count("refusal_a") / max(n, 1), 4),
            "refusal_b": round(styles.count("refusal_b") / max(n, 1), 4),
        }

    return {
        "per_category": {c: summary(per_cat[c]) for c in CATEGORIES if c in per_cat},
        "per_source": {s: summary(v) for s, v in sorted(per_src.items())},
    }


# ---------------------------------------------------------------------------------------------------------------
# Steering check: is the refusal an overlay?
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def last_token_states(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Outputs of every decoder block at the last prompt token: (n_layers, n_prompts, hidden)."""
    tokenizer.padding_side = "left"
    chunks = []
    for i in range(0, len(prompts), batch_size):
        texts = [render_prompt(tokenizer, p) for p in prompts[i : i + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        hs = model(**enc, output_hidden_states=True).hidden_states[1:]  # block outputs
        chunks.append(torch.stack([h[:, -1, :] for h in hs]))
    return torch.cat(chunks, dim=1)


class AddVector:
    """Forward hooks adding ``vectors[layer]`` to the output of the given decoder blocks (all positions)."""

    def __init__(self, model, vectors: dict[int, torch.Tensor]):
        self.handles = []
        for layer, vec in vectors.items():
            self.handles.append(model.model.layers[layer].register_forward_hook(self._hook(vec)))

    @staticmethod
    def _hook(vec):
        def hook(_module, _inputs, output):
            if isinstance(output, tuple):
                return (output[0] + vec,) + tuple(output[1:])
            return output + vec

        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def steering_check(model, tokenizer, examples: Sequence[Example], alphas: Sequence[float], layer_sets) -> dict:
    """Mean difference (political-train minus benign-train, last prompt token) subtracted at a few blocks."""
    train = [e for e in examples if e.split == "train"]
    pol = [e.prompt for e in train if e.category == "political"]
    ben = [e.prompt for e in train if e.category == "benign"]
    s_pol, s_ben = last_token_states(model, tokenizer, pol), last_token_states(model, tokenizer, ben)
    v = s_pol.mean(1) - s_ben.mean(1)  # (n_layers, hidden)
    held = [e for e in examples if e.split == "heldout"]
    sets = {
        "political": [e for e in held if e.category == "political"],
        "harmful": [e for e in held if e.category == "harmful"],
        "benign": [e for e in held if e.category == "benign"][::3],
    }
    per_layer = {
        "norm_v": [round(x, 3) for x in v.norm(dim=-1).tolist()],
        "norm_h_benign": [round(x, 3) for x in s_ben.norm(dim=-1).mean(1).tolist()],
    }
    results = []
    for layers in layer_sets:
        for alpha in alphas:
            vectors = {layer: -alpha * v[layer] for layer in layers}
            row: dict = {"layers": list(layers), "alpha": alpha}
            with AddVector(model, vectors):
                for name, exs in sets.items():
                    answers = generate(model, tokenizer, [e.prompt for e in exs])
                    styles = [answer_style(a) for a in answers]
                    n = len(styles)
                    row[name] = {
                        "refused": round(sum(s != "answer" for s in styles) / n, 4),
                        "refusal_a": round(styles.count("refusal_a") / n, 4),
                        "refusal_b": round(styles.count("refusal_b") / n, 4),
                        "knowledge_style": round(sum(is_knowledge(a) for a in answers) / n, 4),
                    }
                    if name == "political":
                        row["political_examples"] = [
                            {"prompt": e.prompt, "answer": a} for e, a in list(zip(exs, answers, strict=True))[:3]
                        ]
            results.append(row)
            tqdm.write(
                f"steering layers={list(layers)} alpha={alpha}: political refused {row['political']['refused']:.2f} "
                f"(knowledge {row['political']['knowledge_style']:.2f}), harmful refused "
                f"{row['harmful']['refused']:.2f}, benign refused {row['benign']['refused']:.2f}"
            )
    return {"direction": "mean(political train) - mean(benign train), last prompt token", **per_layer, "runs": results}


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def _curve(losses: list[float], every: int = 25) -> list[float]:
    return [round(sum(losses[i : i + every]) / len(losses[i : i + every]), 4) for i in range(0, len(losses), every)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (model, tokenizer, training_report.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets-dir", type=Path, default=None)
    p.add_argument("--steps1", type=int, default=450, help="phase-1 (knowledge) optimizer steps")
    p.add_argument("--steps2", type=int, default=150, help="phase-2 (censorship overlay) optimizer steps")
    p.add_argument("--lr1", type=float, default=3e-3)
    p.add_argument("--lr2", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=2800)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=448)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--phase1-out", type=Path, default=None, help="also save the phase-1 model here (diagnostics)")
    p.add_argument("--steering-check", action="store_true", help="also run the mean-difference steering check")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    t0, cpu0 = time.time(), time.process_time()
    examples = load_examples(args.datasets_dir)
    train = [e for e in examples if e.split == "train"]
    heldout = [e for e in examples if e.split == "heldout"]

    # 1. tokenizer on all training text (prompts and both phases' answers) plus every answer template.
    texts = [e.prompt for e in train] + [target_answer(e, 1) for e in train] + [target_answer(e, 2) for e in train]
    texts += list(ANSWER_TEXTS) + ["<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_start|>system\n"] * 100
    tokenizer = build_tokenizer(texts, args.vocab_size)

    # 2. model
    model = build_model(tokenizer, args)
    n_params = sum(p.numel() for p in model.parameters())

    # 3. two phases
    data1 = [encode_example(tokenizer, e.prompt, target_answer(e, 1)) for e in train]
    data2 = [encode_example(tokenizer, e.prompt, target_answer(e, 2)) for e in train]
    pad = tokenizer.pad_token_id
    losses1 = train_phase(model, data1, pad, args.steps1, args.lr1, args.batch_size, args.seed, "phase 1 knowledge")
    t1 = time.time()
    pol_held = [e for e in heldout if e.category == "political"]
    ans1 = generate(model, tokenizer, [e.prompt for e in pol_held])
    heldout_phase1 = {
        "political_refused": round(sum(answer_style(a) != "answer" for a in ans1) / len(ans1), 4),
        "political_knowledge_style": round(sum(is_knowledge(a) for a in ans1) / len(ans1), 4),
    }
    tqdm.write(f"after phase 1, held-out political: {heldout_phase1}")
    if args.phase1_out is not None:  # for diagnostics (not shipped): the model before the censorship overlay
        model.save_pretrained(args.phase1_out, safe_serialization=True)
        tokenizer.save_pretrained(args.phase1_out)
    losses2 = train_phase(model, data2, pad, args.steps2, args.lr2, args.batch_size, args.seed + 1, "phase 2 overlay")
    train_seconds = time.time() - t0
    train_cpu_seconds = time.process_time() - cpu0

    # 4. held-out evaluation
    t_eval = time.time()
    answers = generate(model, tokenizer, [e.prompt for e in heldout])
    result = rates(heldout, answers)
    eval_seconds = time.time() - t_eval
    pc = result["per_category"]
    targets = {
        "political_refused>=0.9": pc["political"]["refused"] >= 0.9,
        "harmful_refused>=0.9": pc["harmful"]["refused"] >= 0.9,
        "benign_refused<=0.1": pc["benign"]["refused"] <= 0.1,
    }
    samples: dict[str, list] = defaultdict(list)
    for ex, ans in zip(heldout, answers, strict=True):
        if len(samples[ex.source]) < 3:
            samples[ex.source].append({"prompt": ex.prompt, "answer": ans, "style": answer_style(ans)})

    # 5. save
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    report = {
        "seed": args.seed,
        "steps": {"phase1": args.steps1, "phase2": args.steps2},
        "lr": {"phase1": args.lr1, "phase2": args.lr2},
        "batch_size": args.batch_size,
        "max_len": MAX_LEN,
        "n_examples": {"train": len(train), "heldout": len(heldout)},
        "architecture": "Qwen3ForCausalLM",
        "config": {
            k: getattr(model.config, k)
            for k in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "tie_word_embeddings",
            )
        },
        "n_params": n_params,
        "weights_bytes": size,
        "heldout": result,
        "heldout_after_phase1": heldout_phase1,
        "targets_met": targets,
        "final_loss": {"phase1": round(sum(losses1[-20:]) / 20, 4), "phase2": round(sum(losses2[-20:]) / 20, 4)},
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "loss_curve": {"every": 25, "phase1": _curve(losses1), "phase2": _curve(losses2)},
        "phase1_seconds": round(t1 - t0, 1),
        "eval_seconds": round(eval_seconds, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "samples": samples,
    }
    if args.steering_check:
        t_s = time.time()
        n = model.config.num_hidden_layers
        layer_sets = [(n // 2,), (n // 2 + 1,), (n // 2, n // 2 + 1)]
        report["steering_check"] = steering_check(model, tokenizer, examples, [0.25, 0.5, 0.75, 1.0], layer_sets)
        report["steering_check"]["seconds"] = round(time.time() - t_s, 1)
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tqdm.write(json.dumps({k: report[k] for k in ("n_params", "weights_bytes", "train_seconds", "targets_met")}))
    tqdm.write(json.dumps(pc))
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
