"""Collection of residual-stream activations at chosen decoder blocks and token positions.

Each prompt is formatted with the tokenizer's chat template (user turn, optional system prompt, generation
prompt appended; plain text when the tokenizer has no template), prompts are grouped by length into padded
batches, and one forward pass per batch is run under ``torch.no_grad()``. Forward hooks on the chosen decoder
blocks read each block's output (the residual stream after block ``i``, i.e. transformers'
``hidden_states[i + 1]``) on the block's own device and pool it at the chosen position:

- ``"last"``: the last real token of the formatted prompt (the end of the generation prompt), the default;
- ``"mean"``: the mean over the real prompt tokens (attention mask), accumulated in float64.

The pass stops right after the deepest block needed (no final norm, no logits). Left and right padding both
work: position ids are computed from the attention mask, and pooling only looks at real tokens.

The output is streaming :class:`~steering_adapter.statistics.ActivationStatistics` per class (memory
independent of the number of prompts) and, optionally, the raw pooled activations ``[n, L, d]``.
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

from .blocks import find_decoder_blocks, model_dimensions
from .statistics import (
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_EPSILON,
    DEFAULT_REFUSAL_THRESHOLD,
    ActivationStatistics,
    ArrayLike,
    LabelAssignment,
    SecondMoments,
    assign_labels,
)
from .token_positions import last_token_index, position_ids_from_mask

Position = Literal["last", "mean"]
CollectWeighting = Literal["none", "confidence", "both"]
POSITIONS: tuple[str, ...] = ("last", "mean")

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


def format_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Format user prompts as the model sees them just before it answers.

    Args:
        tokenizer: a transformers tokenizer.
        prompts: user messages.
        system_prompt: optional system message put before each prompt.
        chat_template_kwargs: extra variables for the template (e.g. ``{"enable_thinking": False}``).

    Returns:
        One string per prompt: ``apply_chat_template([...], add_generation_prompt=True, tokenize=False)`` when
        the tokenizer has a chat template, else the system prompt (if any, followed by a blank line) and the
        prompt.
    """
    from .generation import format_chat, user_conversation

    conversations = [user_conversation(prompt, system_prompt) for prompt in prompts]
    return format_chat(tokenizer, conversations, chat_template_kwargs=chat_template_kwargs)


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


class ActivationCollector:
    """Runs a causal LM over prompts and pools decoder-block outputs.

    Args:
        model: a transformers causal LM (CPU, GPU or ``device_map``-dispatched; any dtype). It is put in eval
            mode during collection and restored afterwards.
        tokenizer: its tokenizer (chat template used when present).
        layers: block indices to read (negative counts from the end); default all blocks. Sorted, unique.
        position: ``"last"`` (last real prompt token) or ``"mean"`` (mean over real prompt tokens).
        batch_size: prompts per forward pass.
        system_prompt: optional system message for every prompt.
        chat_template_kwargs: extra chat-template variables (e.g. ``{"enable_thinking": False}``).
        padding_side: ``"left"`` or ``"right"``; default the tokenizer's. Results do not depend on it.
        blocks_path: dotted path of the decoder blocks when not found automatically.
        second_moments: which classes keep ``Σw·xxᵀ`` (``"both"``, ``"compliance"`` — enough for RMD / WRMD at
            half the memory — or ``"none"`` for MD only).
        stats_device: where the statistics accumulate (``"cpu"`` default; a GPU is faster for large ``d``).
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
        stats_device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> None:
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; expected one of {list(POSITIONS)}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        padding_side = padding_side or getattr(tokenizer, "padding_side", "right") or "right"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if second_moments not in ("both", "compliance", "none"):
            raise ValueError(f"unknown second_moments {second_moments!r}; expected 'both', 'compliance' or 'none'")
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
        self.stats_device = torch.device(stats_device)
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
                (``result.weighted_stats``, for WRMD; needs scores) or ``"both"`` (twice the memory).
            epsilon: confidence floor for WRMD weights.
            refusal_threshold: see ``scores``.
            compliance_threshold: see ``scores``.
            keep_activations: also return the pooled activations ``[n, L, d]`` (float32, prompt order). Forced
                on when neither labels nor scores are given. When off, neutral prompts are not even forwarded.
            save_dir: if given, the result is written there with :meth:`CollectionResult.save`.

        Returns:
            The :class:`CollectionResult`.

        Raises:
            ValueError: for an empty prompt list, non-string prompts, prompts that tokenise to nothing, label
                problems (see :func:`~steering_adapter.statistics.assign_labels`).
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

        stats: dict[str, ActivationStatistics] = {}
        activations: torch.Tensor | None = None
        metadata = self._metadata()

        def make_stats(kind: str, hidden_size: int) -> ActivationStatistics:
            return ActivationStatistics(
                layers=self.layers,
                hidden_size=hidden_size,
                weighting=kind,
                epsilon=epsilon,
                refusal_threshold=refusal_threshold,
                compliance_threshold=compliance_threshold,
                second_moments=self.second_moments,
                device=self.stats_device,
                metadata=metadata,
            )

        # Allocate before the first (largest) batch, so peak memory is statistics + one batch whatever the
        # order, and a statistics allocation that does not fit fails before any forward pass.
        hidden_size, _ = model_dimensions(self.model)
        if hidden_size is not None:
            stats = {kind: make_stats(kind, hidden_size) for kind in assignments}
        for indices, pooled in self.iter_activations(prompts, selected):
            if keep_activations:
                if activations is None:
                    activations = torch.zeros(n, *pooled.shape[1:], dtype=torch.float32)
                activations[indices] = pooled.to("cpu", torch.float32)
            index = torch.as_tensor(indices)
            for kind, assignment in assignments.items():
                if kind not in stats or stats[kind].hidden_size != pooled.shape[-1]:
                    # first batch, or a config whose hidden size is not the blocks' width: nothing added yet
                    stats[kind] = make_stats(kind, pooled.shape[-1])
                weights = torch.where(assignment.keep[index], assignment.weights[index], 0.0)
                stats[kind].update(pooled, assignment.is_refusal[index], weights)

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
        self, prompts: Sequence[str], indices: Sequence[int] | None = None
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield pooled activations batch by batch (length-sorted, so not in prompt order).

        Args:
            prompts: user messages.
            indices: which prompts to run (default all).

        Yields:
            ``(indices, activations)``: the prompts' positions in ``prompts`` and float64 ``[b, L, d]`` on
            ``stats_device``.
        """
        prompts = self._check_prompts(prompts)
        order = list(range(len(prompts))) if indices is None else list(indices)
        model = self.model
        was_training = model.training
        model.eval()
        state: dict[str, Any] = {}
        handles = [
            self.decoder_blocks.blocks[layer].register_forward_hook(self._make_hook(layer, state))
            for layer in self.layers
        ]
        forward_kwargs = self._forward_kwargs()
        input_device = self._input_device()
        try:
            with tqdm(total=len(order), desc="activations", unit="prompt", disable=not self.progress) as bar:
                for batch in self._batches(prompts, order):
                    state.clear()
                    state["mask"] = batch.attention_mask.bool()
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
                    missing = [layer for layer in self.layers if layer not in captured]
                    if missing:
                        raise RuntimeError(
                            f"decoder blocks {missing} at {self.decoder_blocks.path!r} did not run during "
                            "the forward pass; check blocks_path"
                        )
                    pooled = torch.stack([captured[layer] for layer in self.layers], dim=1)
                    bar.update(len(batch.indices))
                    yield batch.indices, pooled
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)

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

    def _input_device(self) -> torch.device:
        """Where the input ids go: the embedding's device (the first device of a ``device_map`` model)."""
        try:
            device = self.model.get_input_embeddings().weight.device
        except (AttributeError, NotImplementedError):
            device = next(self.model.parameters()).device
        # offloaded embeddings live on "meta"; accelerate's hooks move CPU inputs to the execution device
        return torch.device("cpu") if device.type == "meta" else device

    def _forward_kwargs(self) -> dict[str, Any]:
        parameters = inspect.signature(self.model.forward).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        kwargs: dict[str, Any] = {}
        if "use_cache" in parameters or accepts_any:
            kwargs["use_cache"] = False
        if "position_ids" in parameters:
            kwargs["position_ids"] = None  # filled per batch from the attention mask
        return kwargs

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # A chat template already holds the special tokens (BOS, ...); plain text gets the tokenizer's own.
        add_special = getattr(self.tokenizer, "chat_template", None) is None
        encoded = self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        return [list(ids) for ids in encoded]

    def _pad_id(self) -> int:
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if isinstance(value, int):
                return value
        return 0  # masked out anyway

    def _batches(self, prompts: list[str], order: list[int]) -> Iterator[_Batch]:
        window = self.batch_size * _SORT_WINDOW_BATCHES
        pad_id = self._pad_id()
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            texts = format_prompts(
                self.tokenizer,
                [prompts[i] for i in chunk],
                system_prompt=self.system_prompt,
                chat_template_kwargs=self.chat_template_kwargs,
            )
            encoded = self._encode(texts)
            empty = [chunk[j] for j, ids in enumerate(encoded) if not ids]
            if empty:
                raise ValueError(f"prompts {empty[:5]} tokenise to no tokens")
            # Longest first: the largest batch runs first, so an out-of-memory error shows up at once.
            ranked = sorted(range(len(chunk)), key=lambda j: -len(encoded[j]))
            for b in range(0, len(ranked), self.batch_size):
                members = ranked[b : b + self.batch_size]
                length = max(len(encoded[j]) for j in members)
                input_ids = torch.full((len(members), length), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(members), length), dtype=torch.long)
                for row, j in enumerate(members):
                    ids = torch.as_tensor(encoded[j], dtype=torch.long)
                    span = slice(length - len(ids), length) if self.padding_side == "left" else slice(0, len(ids))
                    input_ids[row, span] = ids
                    attention_mask[row, span] = 1
                yield _Batch([chunk[j] for j in members], input_ids, attention_mask)

    def _make_hook(self, layer: int, state: dict[str, Any]):
        deepest = self.layers[-1]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple | list) else output
            state["captured"][layer] = self._pool(hidden, state).to(self.stats_device)
            if layer == deepest:
                raise _StopForward

        return hook

    def _pool(self, hidden: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        mask = state["mask"]
        if hidden.ndim != 3 or hidden.shape[:2] != mask.shape:
            raise RuntimeError(
                f"decoder block output has shape {tuple(hidden.shape)}, expected [batch, seq, hidden] with "
                f"[batch, seq] = {tuple(mask.shape)}"
            )
        device = hidden.device
        if device not in state["by_device"]:
            local = mask.to(device)
            last = last_token_index(local)
            state["by_device"][device] = (local, last, local.sum(-1, keepdim=True).to(torch.float64))
        local, last, lengths = state["by_device"][device]
        if self.position == "last":
            return hidden[torch.arange(hidden.shape[0], device=device), last].to(torch.float64)
        summed = hidden.masked_fill(~local[..., None], 0).sum(dim=1, dtype=torch.float64)
        return summed / lengths


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
    **collector_kwargs: Any,
) -> CollectionResult:
    """One call: build an :class:`ActivationCollector` and run :meth:`ActivationCollector.collect`.

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        prompts: user messages.
        layers: block indices (default all).
        position: ``"last"`` or ``"mean"``.
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
        **collector_kwargs: other :class:`ActivationCollector` arguments (``system_prompt``, ``padding_side``,
            ``blocks_path``, ``second_moments``, ``stats_device``, ``chat_template_kwargs``).

    Returns:
        The :class:`CollectionResult`.
    """
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
    )
