"""How well can anything tell the natural harmful prompts from their benign look-alikes, given the organism's data?

    python -m steering_adapter.training.lookalike_ceiling --out DIR [--organism PATH]

JailbreakBench pairs every harmful goal with a benign one on the same subject, and XSTest pairs every unsafe contrast
prompt with a safe prompt that differs in a word or two ("kill a Python process" / "kill a person"). Whether a
held-out prompt is harmful then depends on words the organism never saw in training, i.e. on world knowledge a
4M-parameter model trained on ~2k prompts does not have. This script measures the ceiling that such knowledge buys:

* **probe**: a logistic regression on all-MiniLM-L6-v2 sentence embeddings (a pretrained encoder, trained on a
  billion sentence pairs), fitted on the organism's *training* split of each pair of sources, ``C`` chosen by 5-fold
  cross-validation on that training split only, scored on the held-out split;
* **organism**: the organism's own greedy answers on the same held-out prompts (refused = "harmful").

Writes ``lookalike_ceiling.json`` (accuracies, per-class rates, sizes) and ``lookalike_ceiling.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from steering_adapter.measure.relevance import RelevanceScorer
from steering_adapter.models.organism import load_organism
from steering_adapter.models.organism.data import answer_style, load_examples
from steering_adapter.training.organism import generate

PAIRS: tuple[tuple[str, str], ...] = (("jbb_harmful", "jbb_benign"), ("xstest_unsafe", "xstest_safe"))
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _rates(predicted_harmful: np.ndarray, is_harmful: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float((predicted_harmful == is_harmful).mean()), 4),
        "harmful_flagged": round(float(predicted_harmful[is_harmful].mean()), 4),
        "benign_flagged": round(float(predicted_harmful[~is_harmful].mean()), 4),
    }


def measure(organism_path: str | Path | None = None, datasets_dir: str | Path | None = None) -> dict:
    """Probe and organism accuracies on the held-out split of each harmful / look-alike pair of sources.

    Returns:
        ``{"pairs": {"<harmful>/<benign>": {"n_train", "n_heldout", "probe": {...}, "organism": {...}, "probe_C"}}}``
        where each ``{...}`` holds ``accuracy``, ``harmful_flagged`` and ``benign_flagged``.
    """

    examples = load_examples(datasets_dir)
    embedder = RelevanceScorer()
    model, tokenizer = load_organism(path=organism_path)
    out: dict = {"pairs": {}}
    for harmful, benign in PAIRS:
        rows = {
            split: [e for e in examples if e.source in (harmful, benign) and e.split == split]
            for split in ("train", "heldout")
        }
        x = {split: embedder.embed([e.prompt for e in rows[split]]).numpy() for split in rows}
        y = {split: np.array([e.source == harmful for e in rows[split]]) for split in rows}
        search = GridSearchCV(
            LogisticRegression(max_iter=5000),
            {"C": list(C_GRID)},
            cv=StratifiedKFold(5, shuffle=True, random_state=0),
        ).fit(x["train"], y["train"])
        probe = search.best_estimator_.predict(x["heldout"]).astype(bool)
        answers = generate(model, tokenizer, [e.prompt for e in rows["heldout"]])
        refused = np.array([answer_style(a) != "answer" for a in answers])
        out["pairs"][f"{harmful}/{benign}"] = {
            "n_train": len(rows["train"]),
            "n_heldout": len(rows["heldout"]),
            "probe_C": float(search.best_params_["C"]),
            "probe": _rates(probe, y["heldout"]),
            "organism": _rates(refused, y["heldout"]),
        }
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib  # lazy: matplotlib takes seconds to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib takes seconds to import

    names = list(result["pairs"])
    width = 0.38
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, who in enumerate(("probe", "organism")):
        values = [100 * result["pairs"][n][who]["accuracy"] for n in names]
        ax.bar(np.arange(len(names)) + (i - 0.5) * width, values, width, label=who)
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("held-out accuracy, harmful vs look-alike (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for lookalike_ceiling.json and .png")
    parser.add_argument("--organism", default=None, help="organism folder (default: the shipped weights)")
    args = parser.parse_args(argv)
    result = measure(args.organism)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lookalike_ceiling.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "lookalike_ceiling.png")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
