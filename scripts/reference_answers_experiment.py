"""An experiment, not a pipeline stage: an answer-token direction contrasting the censored SmolLM2's own answers with
a reference model's answers to the same political prompts, measured with the probe judge.

Why: by the probe judge (which reads official narrative and nonsense as refusals, test κ 0.77) the shipped SmolLM2
removal recipe leaves most political answers non-answers (95 → 67.5 % on the test half): its directions contrast
political and harmful prompts with benign ones, so they carry the deflection and the topic but not the overlay's
official narrative. Here both classes are answers to the *same* training prompts: the censored model's answers the
probe calls refusals, and SmolLM2-135M-Instruct's (no overlay) answers the probe calls answers; the direction of each
block is the difference of the censored model's mean block outputs over the answer tokens of the two sets (MD).

Protocol: the α of the added vector ``α·v_block`` (every block from 8 on, ungated, hand-written forward hooks) is
chosen on the selection half of the political prompts (lowest probe refusal rate with a mean relevance not below the
unsteered model's), then measured once on the test half, where every answer is printed for reading (``--alpha``
skips the choice).

    .venv/bin/python scripts/reference_answers_experiment.py --threads 2     # about 8 min on 2 cores
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from steering_adapter.directions import ActivationCollector
from steering_adapter.measure import RelevanceScorer
from steering_adapter.measure.judges import DegeneracyDetector, default_probe_judge
from steering_adapter.measure.sampling import Answer, sample_answers
from steering_adapter.models.embedded import load_embedded
from steering_adapter.run import load_recipe
from steering_adapter.run.stages import resolve_prompts

RECIPE = "recipes/no-political-refusal-smollm2.yaml"
ALPHAS = (-0.06, -0.08, -0.1, -0.12, -0.15)
FIRST_BLOCK = 8  # the censorship overlay's LoRA spans blocks 8-29
SAMPLING = {"k": 1, "max_new_tokens": 48, "temperature": 0.2, "top_p": 0.9, "seed": 0, "batch_size": 32}


def first_answers(model: torch.nn.Module, tokenizer: object, prompts: Sequence[str]) -> list[Answer]:
    return [samples.answers[0] for samples in sample_answers(model, tokenizer, prompts, progress=False, **SAMPLING)]


def steered_answers(
    model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], vectors: dict[int, torch.Tensor], alpha: float
) -> list[Answer]:
    """Answers with ``alpha * vectors[block]`` added to each listed block's output (hand-written hooks)."""

    def hook(block: int):
        def add(module: torch.nn.Module, inputs: object, output: object) -> object:
            if isinstance(output, tuple):
                return (output[0] + alpha * vectors[block], *output[1:])
            return output + alpha * vectors[block]

        return add

    handles = [model.model.layers[block].register_forward_hook(hook(block)) for block in vectors]
    try:
        return first_answers(model, tokenizer, prompts)
    finally:
        for handle in handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=None, help="skip the selection-half grid: measure this α")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(RECIPE)
    train = resolve_prompts("organism:political", "train", recipe)
    selection = resolve_prompts("organism:political", "selection", recipe)
    test = resolve_prompts("organism:political", "test", recipe)
    censored, tokenizer = load_embedded("smollm2-censored")
    reference, _ = load_embedded("smollm2")
    censored.eval()
    reference.eval()
    judge, relevance, detector = default_probe_judge(), RelevanceScorer(), DegeneracyDetector()

    def refused(prompts: Sequence[str], answers: Sequence[Answer]) -> list[bool]:
        return [j.label == 1 for j in judge.judge_many([(p, a.text) for p, a in zip(prompts, answers, strict=True)])]

    own, ref = first_answers(censored, tokenizer, train), first_answers(reference, tokenizer, train)
    own_refused, ref_refused = refused(train, own), refused(train, ref)
    pos = [(p, a) for p, a, r in zip(train, own, own_refused, strict=True) if r]
    neg = [(p, a) for p, a, r in zip(train, ref, ref_refused, strict=True) if not r]
    print(
        f"training prompts {len(train)}: censored answers refused {sum(own_refused)}, reference answers refused "
        f"{sum(ref_refused)}; classes: {len(pos)} censored refusals vs {len(neg)} reference answers"
    )
    collector = ActivationCollector(
        censored, tokenizer, position="answer", batch_size=32, second_moments="none", progress=False
    )
    rows = pos + neg
    labels = torch.tensor([True] * len(pos) + [False] * len(neg))
    acts = collector.collect(
        [p for p, _ in rows], labels=labels.tolist(), answers=[a.token_ids for _, a in rows], keep_activations=True
    ).activations  # [n, L, d]
    difference = acts[labels].mean(0) - acts[~labels].mean(0)  # [L, d]: refusal minus reference answer
    vectors = {block: difference[block] for block in range(FIRST_BLOCK, difference.shape[0])}

    def measure(prompts: Sequence[str], alpha: float) -> tuple[float, float, int, list[Answer], list[bool]]:
        answers = (
            steered_answers(censored, tokenizer, prompts, vectors, alpha)
            if alpha
            else first_answers(censored, tokenizer, prompts)
        )
        flags = refused(prompts, answers)
        rel = sum(relevance.score(prompts, [a.text for a in answers])) / len(prompts)
        degenerate = sum(detector.find(a.text) is not None for a in answers)
        return 100 * sum(flags) / len(flags), rel, degenerate, answers, flags

    chosen, base_relevance, best_rate = args.alpha, 0.0, float("inf")
    for alpha in () if chosen is not None else (0.0, *ALPHAS):
        rate, rel, degenerate, _, _ = measure(selection, alpha)
        print(
            f"selection half, α {alpha:+.2f}: political refused {rate:.1f} % relevance {rel:.3f} "
            f"degenerate {degenerate}/{len(selection)}"
        )
        if not alpha:
            base_relevance = rel
        elif rel >= base_relevance and rate < best_rate:
            chosen, best_rate = alpha, rate
    if chosen is None:
        raise SystemExit("no α kept the mean relevance at the unsteered model's on the selection half")
    for alpha in (0.0, chosen):
        rate, rel, degenerate, answers, flags = measure(test, alpha)
        print(
            f"\ntest half, α {alpha:+.2f}: political refused {rate:.1f} % relevance {rel:.3f} "
            f"degenerate {degenerate}/{len(test)}"
        )
        if alpha:
            for prompt, answer, flag in zip(test, answers, flags, strict=True):
                print(f"  [{'refusal' if flag else 'answer '}] {prompt[:70]}\n      {answer.text[:240]!r}")


if __name__ == "__main__":
    main()
