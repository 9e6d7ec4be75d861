"""Collection of residual-stream activations at chosen decoder blocks and token positions.

Each prompt is formatted with the tokenizer's chat template (user turn, optional system prompt, generation
prompt appended; plain text when the tokenizer has no template), prompts are grouped by length into padded
batches, and one forward pass per batch is run under ``torch.no_grad()``. Forward hooks on the chosen decoder
blocks read each block's output (the residual stream after block ``i``, i.e. transformers'
``hidden_states[i + 1]``) on the block's own device and pool it at the chosen position:

- ``"last"``: the last real token of the formatted prompt (the end of the generation prompt), the default;
- ``"mean"``: the mean over the real prompt tokens (attention mask);
- ``"answer"``: the mean over the tokens of a given answer, teacher-forced after the formatted prompt (the caller
  passes one answer per prompt: the model's own, as sampled when the prompt was scored). The vector is added at
  generated tokens as well as at prompt tokens; this position reads what the refusal looks like at the former.

Pooled activations are float32 (float64 for a float64 model) whatever the model's dtype. The pass stops right after
the deepest block needed (no final norm, no logits). Left and right padding both work: position ids are computed from
the attention mask, and pooling only looks at real tokens.

The output is streaming :class:`~steering_adapter.directions.statistics.ActivationStatistics` per class (memory
independent of the number of prompts; only the moments asked for, e.g. those an estimator declares with
``required_statistics()``), each block's sums on that block's device (``device_map`` models included). Raw pooled
activations ``[n, L, d]`` are kept only when asked (``keep_activations=True``); :meth:`ActivationCollector.project`
and :meth:`ActivationCollector.layer_activations` stream what diagnostics need instead (per-prompt projections on
fitted directions, one block's activations).

Under ``torchrun`` (see :mod:`steering_adapter.utils.distributed`) batch ``b`` is forwarded by rank ``b mod N`` and the
statistics, projections and kept activations are summed over the processes, so every process ends with the result
of all prompts.
"""

from __future__ import annotations

import inspect
import json
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from steering_adapter.directions.statistics import (
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_EPSILON,
    DEFAULT_REFUSAL_THRESHOLD,
    SECOND_MOMENTS,
    ActivationStatistics,
    ArrayLike,
    LabelAssignment,
    SecondMoments,
    assign_labels,
)
from steering_adapter.measure.sampling.prompt_encoding import (
    encode_texts,
    format_prompts,
    input_device,
    pad_batch,
    padding_id,
)
from steering_adapter.tuner.blocks import block_device, find_decoder_blocks, model_dimensions
from steering_adapter.tuner.token_positions import last_token_index, position_ids_from_mask
from steering_adapter.utils import distributed

Position = Literal["last", "mean", "answer"]
CollectWeighting = Literal["none", "confidence", "both"]
POSITIONS: tuple[str, ...] = ("last", "mean", "answer")
# An answer: its token ids (exactly what the model generated) or its text (tokenised without special tokens).
Answer = Sequence[int] | str

_FORMAT_VERSION = 1
# Prompts tokenised and length-sorted together: bounds memory for huge prompt lists while keeping padding low.
_SORT_WINDOW_BATCHES = 64

__all__ = [
    "ActivationCollector",
    "CollectionResult",
    "collect_activations",
    "format_prompts",
    "POSITIONS",
]


class _StopForward(Exception):
    """Raised by the hook of the deepest needed block to skip the rest of the forward pass."""


@dataclass
class CollectionResult:
    """What a collection run produced.

    Attributes:
        layers: block indices, the order of the ``L`` axis.
        position: ``"last"`` or ``"mean"``.
        n_prompts: number of prompts given.
        stats: statistics with ``weighting="none"`` (for MD / RMD), or ``None``.
        weighted_stats: statistics with ``weighting="confidence"`` (for WRMD), or ``None``.
        activations: float32 ``[n_prompts, L, d]`` in prompt order when kept, else ``None``. With labels,
            prompts not used by the statistics (neutral) are still forwarded and kept here.
        is_refusal: bool ``[n_prompts]`` class of each prompt (meaningful where ``keep``), or ``None``
            unlabelled.
        keep: bool ``[n_prompts]``, ``False`` for neutral / zero-weight prompts, or ``None`` unlabelled.
        scores: float64 ``[n_prompts]`` refusal-confidence scores when given.
        metadata: provenance (model name, blocks path, system prompt, padding side, ...).
    """

    layers: list[int]
    position: str
    n_prompts: int
    stats: ActivationStatistics | None = None
    weighted_stats: ActivationStatistics | None = None
    activations: torch.Tensor | None = None
    is_refusal: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def layer_activations(self, layer: int) -> torch.Tensor:
        """Raw activations ``[n_prompts, d]`` at block ``layer``.

        Raises:
            ValueError: when activations were not kept or the layer was not collected.
        """
        if self.activations is None:
            raise ValueError("raw activations were not kept; collect with keep_activations=True")
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not collected (layers {self.layers})")
        return self.activations[:, self.layers.index(layer)]

    def save(self, directory: str | Path) -> Path:
        """Write the result to ``directory``.

        Files: ``collection.json`` (layers, position, metadata, which files exist);
        ``statistics.safetensors`` / ``.json`` and ``weighted_statistics.safetensors`` / ``.json`` if present;
        ``activations.safetensors`` (tensors ``activations`` float32 ``[n, L, d]``, ``is_refusal``, ``keep``,
        ``scores``, when present).

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        if self.stats is not None:
            files["stats"] = self.stats.save(directory / "statistics.safetensors").name
        if self.weighted_stats is not None:
            files["weighted_stats"] = self.weighted_stats.save(directory / "weighted_statistics.safetensors").name
        tensors = {
            name: value.detach().cpu().contiguous()
            for name, value in (
                ("activations", self.activations),
                ("is_refusal", self.is_refusal),
                ("keep", self.keep),
                ("scores", self.scores),
            )
            if value is not None
        }
        if tensors:
            save_file(tensors, str(directory / "activations.safetensors"))
            files["activations"] = "activations.safetensors"
        info = {
            "format_version": _FORMAT_VERSION,
            "layers": self.layers,
            "position": self.position,
            "n_prompts": self.n_prompts,
            "metadata": self.metadata,
            "files": files,
        }
        (directory / "collection.json").write_text(json.dumps(info, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> CollectionResult:
        """Read a result written by :meth:`save` (tensors on ``device``)."""
        directory = Path(directory)
        info = json.loads((directory / "collection.json").read_text())
        if info.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported collection format version {info.get('format_version')!r}")
        files = info["files"]
        tensors = (
            load_file(str(directory / files["activations"]), device=str(device)) if "activations" in files else {}
        )
        return cls(
            layers=list(info["layers"]),
            position=info["position"],
            n_prompts=int(info["n_prompts"]),
            stats=ActivationStatistics.load(directory / files["stats"], device) if "stats" in files else None,
            weighted_stats=(
                ActivationStatistics.load(directory / files["weighted_stats"], device)
                if "weighted_stats" in files
                else None
            ),
            activations=tensors.get("activations"),
            is_refusal=tensors.get("is_refusal"),
            keep=tensors.get("keep"),
            scores=tensors.get("scores"),
            metadata=info.get("metadata", {}),
        )


@dataclass
class _Batch:
    indices: list[int]  # positions of the batch's prompts in the caller's list
    input_ids: torch.Tensor  # [b, T]
    attention_mask: torch.Tensor  # [b, T]
    pool_mask: torch.Tensor  # [b, T]: the tokens pooled ("answer": the answer's; otherwise the real tokens)


class ActivationCollector:
    """Runs a causal LM over prompts and pools decoder-block outputs.

    Args:
        model: a transformers causal LM (CPU, GPU or ``device_map``-dispatched; any dtype). It is put in eval
            mode during collection and restored afterwards.
        tokenizer: its tokenizer (chat template used when present).
        layers: block indices to read (negative counts from the end); default all blocks. Sorted, unique.
        position: ``"last"`` (last real prompt token), ``"mean"`` (mean over real prompt tokens) or ``"answer"``
            (mean over the tokens of the answer given with each prompt, after the formatted prompt).
        batch_size: prompts per forward pass.
        system_prompt: optional system message for every prompt.
        chat_template_kwargs: extra chat-template variables (e.g. ``{"enable_thinking": False}``).
        padding_side: ``"left"`` or ``"right"``; default the tokenizer's. Results do not depend on it.
        blocks_path: dotted path of the decoder blocks when not found automatically.
        second_moments: which ``Σw·xxᵀ`` the statistics keep: ``"both"``, ``"compliance"`` (RMD / WRMD),
            ``"pooled"`` (one matrix over both classes) or ``"none"`` (MD); see
            :func:`~steering_adapter.directions.statistics.statistics_nbytes` for the memory of each.
        stats_device: where the statistics accumulate: ``None`` (default) keeps each block's sums on the device the
            block computes on (:func:`~steering_adapter.tuner.blocks.block_device`: a GPU model accumulates on its
            GPUs, a
            ``device_map`` model next to each block); a device (e.g. ``"cpu"``) puts them all there.
        progress: show a tqdm progress bar (``False`` passes ``disable=True`` to tqdm).

    Raises:
        ValueError: for an unknown position, a layer index outside the model, or a bad batch size.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        layers: Sequence[int] | None = None,
        *,
        position: Position = "last",
        batch_size: int = 8,
        system_prompt: str | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        padding_side: Literal["left", "right"] | None = None,
        blocks_path: str | None = None,
        second_moments: SecondMoments = "both",
        stats_device: torch.device | str | None = None,
        progress: bool = True,
    ) -> None:
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; expected one of {list(POSITIONS)}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        padding_side = padding_side or getattr(tokenizer, "padding_side", "right") or "right"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if second_moments not in SECOND_MOMENTS:
            raise ValueError(f"unknown second_moments {second_moments!r}; expected one of {list(SECOND_MOMENTS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.decoder_blocks = find_decoder_blocks(model, blocks_path)
        n_blocks = len(self.decoder_blocks)
        if layers is None:
            chosen = list(range(n_blocks))
        else:
            chosen = []
            for layer in layers:
                if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
                    raise ValueError(f"layer indices must be integers, got {layer!r}")
                layer = int(layer)
                if not -n_blocks <= layer < n_blocks:
                    raise ValueError(
                        f"layer index {layer} is out of range: the model has {n_blocks} decoder blocks "
                        f"(valid: 0..{n_blocks - 1}, or negative from the end)"
                    )
                chosen.append(layer % n_blocks)
            if not chosen:
                raise ValueError("layers is empty; pass None for all blocks")
        self.layers: list[int] = sorted(set(chosen))
        self.position = position
        self.batch_size = batch_size
        self.system_prompt = system_prompt
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.padding_side = padding_side
        self.second_moments = second_moments
        self.stats_device = None if stats_device is None else torch.device(stats_device)
        self.progress = progress

    # --------------------------------------------------------------------------------------------- public API

    def collect(
        self,
        prompts: Sequence[str],
        *,
        labels: ArrayLike | None = None,
        scores: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
        weighting: CollectWeighting = "none",
        epsilon: float = DEFAULT_EPSILON,
        refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
        compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
        keep_activations: bool = False,
        save_dir: str | Path | None = None,
        answers: Sequence[Answer] | None = None,
    ) -> CollectionResult:
        """Collect activations of ``prompts`` into statistics (and optionally keep them raw).

        Args:
            prompts: user messages (non-empty list of strings).
            labels: booleans ``[n]``, ``True`` = refusal; or
            scores: refusal-confidence scores ``c ∈ [-1, 1]`` ``[n]`` (refusal ``c > refusal_threshold``,
                compliance ``c < compliance_threshold``, neutral dropped). Without labels and scores only raw
                activations are returned.
            sample_weight: optional non-negative weights ``[n]``.
            weighting: statistics to build: ``"none"`` (``result.stats``, for MD / RMD), ``"confidence"``
                (``result.weighted_stats``, for WRMD; needs scores) or ``"both"`` (two statistics objects, twice
                the memory; an estimator needs one, see ``required_statistics()``).
            epsilon: confidence floor for WRMD weights.
            refusal_threshold: see ``scores``.
            compliance_threshold: see ``scores``.
            keep_activations: also return the pooled activations ``[n, L, d]`` (float32, prompt order). Forced
                on when neither labels nor scores are given. When off, neutral prompts are not even forwarded.
            save_dir: if given, the result is written there with :meth:`CollectionResult.save`.
            answers: for ``position="answer"`` only: one answer per prompt (token ids or text; a prompt may repeat
                with another answer).

        Returns:
            The :class:`CollectionResult`.

        Raises:
            ValueError: for an empty prompt list, non-string prompts, prompts that tokenise to nothing, label
                problems (see :func:`~steering_adapter.directions.statistics.assign_labels`).
        """
        prompts = self._check_prompts(prompts)
        n = len(prompts)
        if weighting not in ("none", "confidence", "both"):
            raise ValueError(f"unknown weighting {weighting!r}; expected 'none', 'confidence' or 'both'")
        assignments: dict[str, LabelAssignment] = {}
        labelled = labels is not None or scores is not None
        if labelled:
            kinds = ["none", "confidence"] if weighting == "both" else [weighting]
            for kind in kinds:
                assignments[kind] = assign_labels(
                    n,
                    labels=labels,
                    scores=scores,
                    sample_weight=sample_weight,
                    refusal_threshold=refusal_threshold,
                    compliance_threshold=compliance_threshold,
                    weighting=kind,
                    epsilon=epsilon,
                )
        else:
            keep_activations = True
        first = next(iter(assignments.values()), None)
        if first is not None and not bool(first.keep.any()):
            raise ValueError("every prompt is neutral (or has zero weight); nothing to collect")
        if keep_activations or first is None:
            selected = list(range(n))
        else:
            selected = [i for i in range(n) if bool(first.keep[i])]

        metadata = self._metadata()
        hidden_size = self.hidden_size
        devices = self.block_devices()
        # Allocate before the first (largest) batch, so peak memory is statistics + one batch whatever the order,
        # and a statistics allocation that does not fit fails before any forward pass.
        stats = {
            kind: ActivationStatistics(
                layers=self.layers,
                hidden_size=hidden_size,
                weighting=kind,
                epsilon=epsilon,
                refusal_threshold=refusal_threshold,
                compliance_threshold=compliance_threshold,
                second_moments=self.second_moments,
                device=devices,
                metadata=metadata,
            )
            for kind in assignments
        }
        activations = torch.zeros(n, len(self.layers), hidden_size) if keep_activations else None
        for indices, pooled in self.iter_activations(prompts, selected, answers=answers):
            if activations is not None:
                for position, layer in enumerate(self.layers):
                    activations[indices, position] = pooled[layer].to("cpu", torch.float32)
            index = torch.as_tensor(indices)
            for kind, assignment in assignments.items():
                weights = torch.where(assignment.keep[index], assignment.weights[index], 0.0)
                stats[kind].update(pooled, assignment.is_refusal[index], weights)
        for kind in stats:
            stats[kind].all_reduce()
        if activations is not None:
            distributed.all_reduce_sum_(activations)  # each prompt was forwarded by one process: an exact gather

        result = CollectionResult(
            layers=list(self.layers),
            position=self.position,
            n_prompts=n,
            stats=stats.get("none"),
            weighted_stats=stats.get("confidence"),
            activations=activations,
            is_refusal=first.is_refusal if first is not None else None,
            keep=first.keep if first is not None else None,
            scores=None if scores is None else torch.as_tensor(scores, dtype=torch.float64).cpu(),
            metadata=metadata,
        )
        if save_dir is not None:
            result.save(save_dir)
        return result

    def iter_activations(
        self,
        prompts: Sequence[str],
        indices: Sequence[int] | None = None,
        *,
        layers: Sequence[int] | None = None,
        shard: bool = True,
        answers: Sequence[Answer] | None = None,
    ) -> Iterator[tuple[list[int], dict[int, torch.Tensor]]]:
        """Yield pooled activations batch by batch (length-sorted, so not in prompt order).

        Args:
            prompts: user messages.
            indices: which prompts to run (default all).
            layers: blocks to read (default the collector's); the pass stops after the deepest one.
            shard: under ``torch.distributed``, forward only this process's batches (batch ``b`` belongs to rank
                ``b mod N``); the caller merges across processes.
            answers: ``position="answer"`` only (and then required): one answer per prompt, token ids or text.

        Yields:
            ``(indices, {block: activations})``: the prompts' positions in ``prompts`` and, per block, float32
            ``[b, d]`` (float64 for a float64 model) on the block's device.
        """
        prompts = self._check_prompts(prompts)
        answer_ids = self._answer_ids(prompts, answers)
        order = list(range(len(prompts))) if indices is None else list(indices)
        layers = self.layers if layers is None else sorted({int(layer) for layer in layers})
        unknown = [layer for layer in layers if layer not in self.layers]
        if unknown:
            raise ValueError(f"blocks {unknown} are not among this collector's layers {self.layers}")
        shard = shard and distributed.is_distributed()
        model = self.model
        was_training = model.training
        model.eval()
        state: dict[str, Any] = {}
        handles = [
            self.decoder_blocks.blocks[layer].register_forward_hook(self._make_hook(layer, layers[-1], state))
            for layer in layers
        ]
        forward_kwargs = self._forward_kwargs()
        input_device = self._input_device()
        show = self.progress and distributed.is_main()
        try:
            with tqdm(total=None if shard else len(order), desc="activations", unit="prompt", disable=not show) as bar:
                for number, batch in enumerate(self._batches(prompts, order, answer_ids)):
                    if shard and not distributed.owned(number):
                        continue
                    state.clear()
                    state["mask"] = batch.pool_mask.bool()
                    state["by_device"] = {}
                    state["captured"] = {}
                    mask = batch.attention_mask.to(input_device)
                    kwargs = dict(forward_kwargs)
                    if "position_ids" in kwargs:
                        kwargs["position_ids"] = position_ids_from_mask(mask)
                    with torch.no_grad():
                        try:
                            model(input_ids=batch.input_ids.to(input_device), attention_mask=mask, **kwargs)
                        except _StopForward:
                            pass
                    captured = state["captured"]
                    missing = [layer for layer in layers if layer not in captured]
                    if missing:
                        raise RuntimeError(
                            f"decoder blocks {missing} at {self.decoder_blocks.path!r} did not run during "
                            "the forward pass; check blocks_path"
                        )
                    bar.update(len(batch.indices))
                    yield batch.indices, {layer: captured[layer] for layer in layers}
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)

    def project(self, prompts: Sequence[str], directions: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Projection ``h·v̂`` of every prompt's pooled activation on each block's unit direction (one forward pass).

        What diagnostics need from the activations, without keeping them: ``n × L`` numbers instead of ``n × L × d``.
        Under ``torch.distributed`` every process must call it; each forwards its own batches and all receive every
        projection.

        Args:
            prompts: user messages.
            directions: ``{block: [d]}`` (any norm; non-zero), blocks among the collector's layers.

        Returns:
            float64 ``[n_prompts, L]`` in prompt order, columns in sorted block order; each projection is computed in
            float64 on the block's device.
        """
        layers = sorted(int(layer) for layer in directions)
        units = {}
        for layer in layers:
            vector = torch.as_tensor(directions[layer]).detach().to("cpu", torch.float64).reshape(-1)
            norm = torch.linalg.vector_norm(vector)
            if not bool(torch.isfinite(vector).all()) or norm == 0:
                raise ValueError(f"the direction of block {layer} is zero or not finite")
            units[layer] = vector / norm
        prompts = self._check_prompts(prompts)
        projections = torch.zeros(len(prompts), len(layers), dtype=torch.float64)
        for indices, pooled in self.iter_activations(prompts, layers=layers):
            for column, layer in enumerate(layers):
                x = pooled[layer]
                if units[layer].device != x.device:
                    units[layer] = units[layer].to(x.device)
                projections[indices, column] = (x.to(torch.float64) @ units[layer]).cpu()
        return distributed.all_reduce_sum_(projections)

    def layer_activations(self, prompts: Sequence[str], layer: int) -> torch.Tensor:
        """Pooled activations of one block, float32 ``[n_prompts, d]`` on CPU in prompt order (one forward pass that
        stops after the block). Collective under ``torch.distributed``, like :meth:`project`."""
        prompts = self._check_prompts(prompts)
        result = torch.zeros(len(prompts), self.hidden_size)
        for indices, pooled in self.iter_activations(prompts, layers=[layer]):
            result[indices] = pooled[int(layer)].to("cpu", torch.float32)
        return distributed.all_reduce_sum_(result)

    def block_devices(self) -> dict[int, torch.device]:
        """Where each collected block's statistics live: ``stats_device``, else the block's own device."""
        if self.stats_device is not None:
            return dict.fromkeys(self.layers, self.stats_device)
        return {layer: block_device(self.decoder_blocks.blocks[layer]) for layer in self.layers}

    # ---------------------------------------------------------------------------------------------- internals

    @staticmethod
    def _check_prompts(prompts: Sequence[str]) -> list[str]:
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings, not a single string")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("the prompt list is empty")
        bad = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str)]
        if bad:
            raise ValueError(f"prompts must be strings; entries {bad[:5]} are not")
        return prompts

    def _metadata(self) -> dict[str, Any]:
        config = getattr(self.model, "config", None)
        return {
            "model": getattr(config, "name_or_path", None) or type(self.model).__name__,
            "blocks_path": self.decoder_blocks.path,
            "position": self.position,
            "system_prompt": self.system_prompt,
            "chat_template": getattr(self.tokenizer, "chat_template", None) is not None,
            "chat_template_kwargs": self.chat_template_kwargs,
        }

    @property
    def hidden_size(self) -> int:
        """Width ``d`` of the blocks' outputs (the config's hidden size, else the input embeddings' width)."""
        hidden_size, _ = model_dimensions(self.model)
        if hidden_size is None:
            hidden_size = self.model.get_input_embeddings().embedding_dim
        return int(hidden_size)

    def _input_device(self) -> torch.device:
        """Where the input ids go (see :func:`steering_adapter.measure.sampling.prompt_encoding.input_device`)."""
        return input_device(self.model)

    def _forward_kwargs(self) -> dict[str, Any]:
        parameters = inspect.signature(self.model.forward).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        kwargs: dict[str, Any] = {}
        if "use_cache" in parameters or accepts_any:
            kwargs["use_cache"] = False
        if "position_ids" in parameters:
            kwargs["position_ids"] = None  # filled per batch from the attention mask
        return kwargs

    def _answer_ids(self, prompts: list[str], answers: Sequence[Answer] | None) -> list[list[int]] | None:
        """The answers' token ids (``position="answer"``), checked: one non-empty answer per prompt."""
        if self.position != "answer":
            if answers is not None:
                raise ValueError(
                    f"answers are only read at position 'answer' (this collector pools {self.position!r})"
                )
            return None
        if answers is None:
            raise ValueError("position 'answer' pools over answer tokens: pass answers (one per prompt)")
        if isinstance(answers, str) or len(answers) != len(prompts):
            count = "a single string" if isinstance(answers, str) else f"{len(answers)} answers"
            raise ValueError(f"position 'answer' needs one answer per prompt: got {count} for {len(prompts)} prompts")
        texts = [i for i, answer in enumerate(answers) if isinstance(answer, str) and answer]
        encoded = encode_texts(self.tokenizer, [answers[i] for i in texts], add_special_tokens=False) if texts else []
        ids: list[list[int]] = [[] for _ in answers]
        for i, tokens in zip(texts, encoded, strict=True):
            ids[i] = list(tokens)
        for i, answer in enumerate(answers):
            if not isinstance(answer, str):
                if not all(isinstance(token, numbers.Integral) for token in answer):
                    raise ValueError(f"answer {i} must be a string or a sequence of token ids")
                ids[i] = [int(token) for token in answer]
        empty = [i for i, tokens in enumerate(ids) if not tokens]
        if empty:
            raise ValueError(
                f"answers {empty[:5]} have no tokens: position 'answer' pools over at least one answer token "
                "(leave empty answers out, with their prompts)"
            )
        return ids

    def _batches(self, prompts: list[str], order: list[int], answer_ids: list[list[int]] | None) -> Iterator[_Batch]:
        window = self.batch_size * _SORT_WINDOW_BATCHES
        pad_id = padding_id(self.tokenizer)
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            texts = format_prompts(
                self.tokenizer,
                [prompts[i] for i in chunk],
                system_prompt=self.system_prompt,
                chat_template_kwargs=self.chat_template_kwargs,
            )
            encoded = encode_texts(self.tokenizer, texts)
            # pooled tokens: the answer's, after the prompt (otherwise every real token: the attention mask)
            pooled = None
            if answer_ids is not None:
                pooled = [[0] * len(ids) + [1] * len(answer_ids[i]) for ids, i in zip(encoded, chunk, strict=True)]
                encoded = [ids + answer_ids[i] for ids, i in zip(encoded, chunk, strict=True)]
            # Longest first: the largest batch runs first, so an out-of-memory error shows up at once.
            ranked = sorted(range(len(chunk)), key=lambda j: -len(encoded[j]))
            for b in range(0, len(ranked), self.batch_size):
                members = ranked[b : b + self.batch_size]
                input_ids, attention_mask = pad_batch([encoded[j] for j in members], pad_id, side=self.padding_side)
                pool_mask = attention_mask
                if pooled is not None:
                    pool_mask, _ = pad_batch([pooled[j] for j in members], 0, side=self.padding_side)
                yield _Batch([chunk[j] for j in members], input_ids, attention_mask, pool_mask)

    def _make_hook(self, layer: int, deepest: int, state: dict[str, Any]):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple | list) else output
            state["captured"][layer] = self._pool(hidden, state)
            if layer == deepest:
                raise _StopForward

        return hook

    def _pool(self, hidden: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """``[b, d]`` pooled on the block's device, in float32 (float64 for a float64 model)."""
        mask = state["mask"]
        if hidden.ndim != 3 or hidden.shape[:2] != mask.shape:
            raise RuntimeError(
                f"decoder block output has shape {tuple(hidden.shape)}, expected [batch, seq, hidden] with "
                f"[batch, seq] = {tuple(mask.shape)}"
            )
        device = hidden.device
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        if device not in state["by_device"]:
            local = mask.to(device)
            last = last_token_index(local)
            state["by_device"][device] = (local, last, local.sum(-1, keepdim=True))
        local, last, lengths = state["by_device"][device]
        if self.position == "last":
            return hidden[torch.arange(hidden.shape[0], device=device), last].to(dtype)
        summed = hidden.masked_fill(~local[..., None], 0).sum(dim=1, dtype=dtype)
        return summed / lengths.to(dtype)


def collect_activations(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    position: Position = "last",
    batch_size: int = 8,
    labels: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    weighting: CollectWeighting = "none",
    epsilon: float = DEFAULT_EPSILON,
    refusal_threshold: float = DEFAULT_REFUSAL_THRESHOLD,
    compliance_threshold: float = DEFAULT_COMPLIANCE_THRESHOLD,
    keep_activations: bool = False,
    save_dir: str | Path | None = None,
    progress: bool = True,
    estimator: Any | None = None,
    answers: Sequence[Answer] | None = None,
    **collector_kwargs: Any,
) -> CollectionResult:
    """One call: build an :class:`ActivationCollector` and run :meth:`ActivationCollector.collect`.

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        prompts: user messages.
        layers: block indices (default all).
        position: ``"last"``, ``"mean"`` or ``"answer"`` (then pass ``answers``).
        batch_size: prompts per forward pass.
        labels: booleans ``[n]`` (``True`` = refusal).
        scores: refusal-confidence scores ``[n]``.
        sample_weight: optional weights ``[n]``.
        weighting: ``"none"``, ``"confidence"`` or ``"both"``.
        epsilon: confidence floor for WRMD weights.
        refusal_threshold: scores above it are refusal.
        compliance_threshold: scores below it are compliance.
        keep_activations: also return raw activations ``[n, L, d]``.
        save_dir: write the result there.
        progress: show a progress bar.
        estimator: an MD / RMD / WRMD estimator: collect exactly the statistics it declares
            (``estimator.required_statistics()``: its weighting and second moments, nothing else); then
            ``weighting`` and ``second_moments`` must not be given.
        answers: one answer per prompt (token ids or text), for ``position="answer"``.
        **collector_kwargs: other :class:`ActivationCollector` arguments (``system_prompt``, ``padding_side``,
            ``blocks_path``, ``second_moments``, ``stats_device``, ``chat_template_kwargs``).

    Returns:
        The :class:`CollectionResult`.
    """
    if estimator is not None:
        if weighting != "none" or "second_moments" in collector_kwargs:
            raise ValueError("give either an estimator or weighting / second_moments, not both")
        spec = estimator.required_statistics()
        weighting = spec.weighting
        collector_kwargs["second_moments"] = spec.second_moments
    collector = ActivationCollector(
        model,
        tokenizer,
        layers,
        position=position,
        batch_size=batch_size,
        progress=progress,
        **collector_kwargs,
    )
    return collector.collect(
        prompts,
        labels=labels,
        scores=scores,
        sample_weight=sample_weight,
        weighting=weighting,
        epsilon=epsilon,
        refusal_threshold=refusal_threshold,
        compliance_threshold=compliance_threshold,
        keep_activations=keep_activations,
        save_dir=save_dir,
        answers=answers,
    )
