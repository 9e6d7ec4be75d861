"""Experiment (not yet a judge): a linear probe on SmolLM2-135M-Instruct's hidden states as an offline refusal judge.

Each labeled answer is read by the converted SmolLM2-135M-Instruct (``bash scripts/bootstrap.sh`` converts it
offline) as the assistant turn after its prompt (chat template, teacher-forced, at most 96 answer tokens); the
features are the hidden states averaged over the answer tokens at one or more depths, standard-scaled, and a
balanced logistic regression is fitted on ``labels/exemplars.jsonl`` plus ``labels/dev.jsonl``. The script prints
Cohen's κ of 5-fold cross-validation on dev (the exemplars always in the training folds) and κ on the test split for
a small grid of depths and regularisation strengths. Choose a setting by the cross-validated κ, never by the test κ.

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

from steering_adapter.measure.judges import labeled_answers
from steering_adapter.models.embedded import load_embedded

DEPTHS = (6, 10, 14, 18, 22, 26, 30)  # hidden_states index: 0 = embeddings, i = output of block i - 1


def answer_features(model, tokenizer, prompt: str, answer: str, max_answer_tokens: int = 96) -> np.ndarray:
    """``[len(DEPTHS), d]``: the hidden states at each depth, averaged over the answer's tokens."""
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer if answer.strip() else "(empty)", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head_ids + answer_ids[:max_answer_tokens]])
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    return np.stack([states[depth][0, len(head_ids) :].mean(0).numpy() for depth in DEPTHS])


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
        x = np.stack([answer_features(model, tokenizer, row.prompt, row.answer) for row in rows])
        data[part] = (x, np.array([row.refusal for row in rows]))
        print(f"features of {part}: {len(rows)} answers", flush=True)
    (xe, ye), (xd, yd), (xt, yt) = data["exemplars"], data["dev"], data["test"]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(xd[:, 0], yd))
    for depths in ([0], [1], [2], [3], [4], [5], [6], [2, 4]):
        for c in (0.01, 0.1, 1.0):

            def flat(x, chosen=depths):
                return x[:, chosen].reshape(len(x), -1)

            predicted = np.zeros(len(yd), bool)
            for train, held in folds:
                fitted = probe(c).fit(np.vstack([flat(xe), flat(xd[train])]), np.concatenate([ye, yd[train]]))
                predicted[held] = fitted.predict(flat(xd[held]))
            final = probe(c).fit(np.vstack([flat(xe), flat(xd)]), np.concatenate([ye, yd]))
            on_test = final.predict(flat(xt))
            print(
                f"depths {[DEPTHS[i] for i in depths]} C={c}: dev CV kappa {cohen_kappa_score(yd, predicted):.3f}  "
                f"test kappa {cohen_kappa_score(yt, on_test):.3f}  test accuracy {accuracy_score(yt, on_test):.3f}"
            )


if __name__ == "__main__":
    main()
