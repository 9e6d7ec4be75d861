"""Collection of residual-stream activations at chosen decoder blocks and token positions.

Prompts are formatted, tokenised and grouped by length into padded batches
(:mod:`steering_adapter.directions.collection_batches`); one forward pass per batch runs under ``torch.no_grad()`` and
stops right after the deepest block needed, whose outputs forward hooks pool on each block's own device at the chosen
position, ``"last"``, ``"mean"`` or ``"answer"`` (:mod:`steering_adapter.directions.pooling`). Left and right padding
both work: position ids are computed from the attention mask, and pooling only looks at real tokens.

The output (:class:`~steering_adapter.directions.collection_result.CollectionResult`) is streaming
:class:`~steering_adapter.directions.statistics.ActivationStatistics` per class (memory independent of the number of
prompts; only the moments asked for, e.g. those an estimator declares with ``required_statistics()``), each block's
sums on that block's device (``device_map`` models included). Raw pooled activations ``[n, L, d]`` are kept only
when asked (``keep_activations=True``); :meth:`ActivationCollector.project` and
:meth:`ActivationCollector.layer_activations` stream what diagnostics need instead (per-prompt projections on fitted
directions, one block's activations).

Under ``torchrun`` (see :mod:`steering_adapter.utils.distributed`) batch ``b`` is forwarded by rank ``b mod N`` and the
statistics, projections and kept activations are summed over the processes, so every process ends with the result
of all prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from steering_adapter.directions.collection_batches import Answer, answer_token_ids, collection_batches
from steering_adapter.directions.collection_result import CollectionResult
from steering_adapter.directions.labels import (
    DEFAULT_COMPLIANCE_THRESHOLD,
    DEFAULT_EPSILON,
    DEFAULT_REFUSAL_THRESHOLD,
    ArrayLike,
    LabelAssignment,
    assign_labels,
)
from steering_adapter.directions.moments import SECOND_MOMENTS, SecondMoments
from steering_adapter.directions.pooling import POSITIONS, Position, chosen_blocks, collection_forward_kwargs
from steering_adapter.directions.statistics import ActivationStatistics
from steering_adapter.measure.sampling.block_pooling import StopForward, pooling_hook
from steering_adapter.measure.sampling.prompt_encoding import input_device
from steering_adapter.tuner.blocks import block_device, find_decoder_blocks, model_dimensions
from steering_adapter.tuner.token_positions import position_ids_from_mask
from steering_adapter.utils import distributed

CollectWeighting = Literal["none", "confidence", "both"]


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
            :func:`~steering_adapter.directions.moments.statistics_nbytes` for the memory of each.
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
        self.layers: list[int] = chosen_blocks(layers, len(self.decoder_blocks))
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
                problems (see :func:`~steering_adapter.directions.labels.assign_labels`).
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
        answer_ids = answer_token_ids(self.tokenizer, self.position, prompts, answers)
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
            self.decoder_blocks.blocks[layer].register_forward_hook(
                pooling_hook(layer, layers[-1], state, self.position)
            )
            for layer in layers
        ]
        call_kwargs = collection_forward_kwargs(self.model)
        input_device = self._input_device()
        show = self.progress and distributed.is_main()
        try:
            with tqdm(total=None if shard else len(order), desc="activations", unit="prompt", disable=not show) as bar:
                batches = collection_batches(
                    self.tokenizer,
                    prompts,
                    order,
                    answer_ids,
                    batch_size=self.batch_size,
                    system_prompt=self.system_prompt,
                    chat_template_kwargs=self.chat_template_kwargs,
                    padding_side=self.padding_side,
                )
                for number, batch in enumerate(batches):
                    if shard and not distributed.owned(number):
                        continue
                    state.clear()
                    state["mask"] = batch.pool_mask.bool()
                    state["by_device"] = {}
                    state["captured"] = {}
                    mask = batch.attention_mask.to(input_device)
                    kwargs = dict(call_kwargs)
                    if "position_ids" in kwargs:
                        kwargs["position_ids"] = position_ids_from_mask(mask)
                    with torch.no_grad():
                        try:
                            model(input_ids=batch.input_ids.to(input_device), attention_mask=mask, **kwargs)
                        except StopForward:
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
