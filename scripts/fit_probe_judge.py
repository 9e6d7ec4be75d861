"""Fit the package's probe judge and write ``steering_adapter/measure/judges/weights/probe-smollm2.safetensors``.

The reader is the embedded SmolLM2-135M-Instruct (``bash scripts/bootstrap.sh`` converts it offline); the probe is
fitted on ``labels/exemplars.jsonl`` plus ``labels/dev.jsonl`` with the block and C chosen by
``scripts/judge_probe_experiment.py`` (dev cross-validation). Run it again whenever those label files change
(``default_probe_judge`` refuses a fit whose label hash does not match them). About a minute on 2 CPU threads.

    .venv/bin/python scripts/fit_probe_judge.py --threads 2
"""

from __future__ import annotations

import argparse

import torch

from steering_adapter.measure.judges import labeled_answers
from steering_adapter.measure.judges.probe import DEFAULT_READER, ProbeJudge, default_probe_file
from steering_adapter.models.embedded import load_embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block", type=int, default=13, help="decoder block read (default 13: hidden_states[14])")
    parser.add_argument("--C", type=float, default=0.01, help="inverse regularisation strength (default 0.01)")
    parser.add_argument("--out", default=str(default_probe_file()))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reader, tokenizer = load_embedded(DEFAULT_READER)
    judge = ProbeJudge(reader, tokenizer, block=args.block, C=args.C, progress=True)
    judge.fit([*labeled_answers("exemplars"), *labeled_answers("dev")])
    path = judge.save(args.out, reader_name=DEFAULT_READER)
    print(f"wrote {path}: {judge.name}, fitted on {judge.n_train_} answers")


if __name__ == "__main__":
    main()
