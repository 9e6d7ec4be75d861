"""The experiment behind the probe judge's setting: a linear probe on SmolLM2-135M-Instruct's hidden states, by block.

Each labeled answer is read by the converted SmolLM2-135M-Instruct (``bash scripts/bootstrap.sh`` converts it
offline) as the assistant turn after its prompt (chat template, teacher-forced, at most 96 answer tokens); the
features are decoder block outputs averaged over the answer tokens (``answer_states``), standard-scaled, and a
balanced logistic regression is fitted on ``labels/exemplars.jsonl`` plus ``labels/dev.jsonl``. The script prints
Cohen's κ of 5-fold cross-validation on dev (the exemplars always in the training folds) and κ on the test split for
a small grid of blocks and regularisation strengths. Choose a setting by the cross-validated κ, never by the test κ
(``scripts/fit_probe_judge.py`` fits the chosen one for the package).

    .venv/bin/python scripts/judge_probe_experiment.py --threads 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, cohen_kappa_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from steering_adapter.measure.judges import answer_states, labeled_answers
from steering_adapter.models.embedded import load_embedded

BLOCKS = (5, 9, 13, 17, 21, 25, 29)  # decoder block outputs read (transformers' hidden_states[block + 1])


def probe(c: float) -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=3000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reader", default="smollm2", help="embedded reader model (default smollm2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_embedded(args.reader)
    model.eval()
    data = {}
    for part in ("exemplars", "dev", "test"):
        rows = labeled_answers(part)
        x = answer_states(model, tokenizer, [row.prompt for row in rows], [row.answer for row in rows], BLOCKS)
        data[part] = (x, np.array([row.refusal for row in rows]))
        print(f"features of {part}: {len(rows)} answers", flush=True)
    (xe, ye), (xd, yd), (xt, yt) = data["exemplars"], data["dev"], data["test"]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(xd[:, 0], yd))
    for columns in ([0], [1], [2], [3], [4], [5], [6], [2, 4]):
        for c in (0.01, 0.1, 1.0):

            def flat(x, chosen=columns):
                return x[:, chosen].reshape(len(x), -1)

            predicted = np.zeros(len(yd), bool)
            for train, held in folds:
                fitted = probe(c).fit(np.vstack([flat(xe), flat(xd[train])]), np.concatenate([ye, yd[train]]))
                predicted[held] = fitted.predict(flat(xd[held]))
            final = probe(c).fit(np.vstack([flat(xe), flat(xd)]), np.concatenate([ye, yd]))
            on_test = final.predict(flat(xt))
            print(
                f"blocks {[BLOCKS[i] for i in columns]} C={c}: dev CV kappa {cohen_kappa_score(yd, predicted):.3f}  "
                f"test kappa {cohen_kappa_score(yt, on_test):.3f}  test accuracy {accuracy_score(yt, on_test):.3f}"
            )


if __name__ == "__main__":
    main()
