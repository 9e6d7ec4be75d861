"""The base model and its adapters for ``eval``, ``generate`` and ``chat``: which model, where, with what attached."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from steering_adapter.adapter.hub_access import hub_errors_as_one_line, resolve_source
from steering_adapter.models.embedded import canonical_name
from steering_adapter.run.recipe import ModelSpec
from steering_adapter.run.stages.load import load_model
from steering_adapter.runtimes.vllm import require_vllm
from steering_adapter.tuner.files import read_config_dict
from steering_adapter.tuner.model import set_adapter_scale

__all__ = [
    "base_model_spec",
    "check_model_and_adapters",
    "load_model_and_adapters",
    "placement_overrides",
]


def _adapter_source(adapter: str, option: str) -> tuple[str, dict[str, Any]]:
    """Where an adapter is read from (:func:`~steering_adapter.adapter.hub_access.resolve_source`; one-line errors
    naming ``option``)."""
    return resolve_source(adapter, key=option, kind="adapter")


def check_model_and_adapters(
    model_name: str | None, adapters: Sequence[str], adapter_option: str = "--adapter"
) -> None:
    """Check ``--model`` and the adapters before any work: a missing folder, or a Hub id neither cached nor
    reachable, is one line naming the option; each adapter's ``adapter_config.json`` is read (downloaded) now, so a
    Hub repo that does not exist fails before the model loads.

    Raises:
        FileNotFoundError: ``--adapter: no such folder 'runs/x/adapter' ...``.
        ValueError: no such Hub repo, no or an unreadable ``adapter_config.json``.
        HubUnreachableError: a Hub id that is not cached while the Hub cannot be reached.
    """
    if model_name is not None:
        resolve_source(model_name, key="--model")
    for adapter in adapters:
        source, hub = _adapter_source(adapter, adapter_option)
        with hub_errors_as_one_line(adapter, adapter_option):
            read_config_dict(source, **hub)


def base_model_spec(model_name: str | None, adapters: Sequence[str], adapter_option: str = "--adapter"):
    """The base model to load: ``--model`` as given, else the one the first adapter's config names, pinned to the
    revision it records (an adapter computed on an embedded model, e.g. the organism, loads that model offline)."""
    if model_name is not None:
        return ModelSpec(name_or_path=canonical_name(model_name) or model_name)
    if not adapters:
        raise ValueError("give --model or at least one --adapter (its config names the base model)")
    source, hub = _adapter_source(adapters[0], adapter_option)
    with hub_errors_as_one_line(adapters[0], adapter_option):
        config = read_config_dict(source, **hub)
    name = config.get("base_model_name_or_path")
    if not name:
        raise ValueError(f"{adapters[0]}: the adapter config names no base model; give --model")
    short = canonical_name(name)
    if short is not None:
        return ModelSpec(name_or_path=short)
    return ModelSpec(name_or_path=name, revision=config.get("revision") or None)


def load_model_and_adapters(
    model_name: str | None,
    adapters: Sequence[str],
    scale: float | None,
    spec: Any = None,
    placement: dict[str, str] | None = None,
    adapter_option: str = "--adapter",
    backend: str = "transformers",
    engine: dict[str, Any] | None = None,
):
    """The base model with the adapters attached in order. ``spec`` (a recipe's model section) supplies dtype, device
    and system prompt; the model itself and its revision come from :func:`base_model_spec`; ``placement``
    (``--dtype`` / ``--device`` / ``--device-map``, see :func:`placement_overrides`) overrides dtype and device.

    Args:
        model_name: ``--model``, or None to take the base model from the first adapter's config.
        adapters: adapter folders or Hub repo ids, attached as ``adapter0``, ``adapter1``, ... and all made active.
        scale: when given, every adapter's scale α.
        spec: a recipe's ``ModelSpec``, or None.
        placement: ``ModelSpec`` field overrides (``dtype``, ``device``), or None.
        adapter_option: the option that named the adapters (``--adapter``, ``eval``'s ``ADAPTER``), for messages.
        backend: ``"transformers"``, or ``"vllm"`` (``--backend vllm``): the same model, revision, dtype and adapters
            in a vLLM engine.
        engine: more ``vllm.LLM`` arguments for the vLLM backend (a recipe's ``sampling.engine_args``).

    Returns:
        ``(model, tokenizer)``; with the vLLM backend the model is a
        :class:`~steering_adapter.runtimes.vllm.VllmSampler` (close it when done).

    Raises:
        ValueError: the vLLM backend where vLLM is not installed (one line naming ``--backend vllm``).
    """
    if backend == "vllm":
        require_vllm("--backend vllm")
    base = base_model_spec(model_name, adapters, adapter_option)
    if spec is not None:
        base = dataclasses.replace(spec, name_or_path=base.name_or_path, revision=base.revision)
    if placement:
        base = dataclasses.replace(base, **placement)
    if backend == "vllm":
        sampler = _vllm_sampler(base, adapters, scale, adapter_option, engine)
        return sampler, sampler.tokenizer
    key = "--model" if model_name is not None else f"{adapter_option} {adapters[0]}: base_model_name_or_path"
    model, tokenizer = load_model(base, key=key)
    names = []
    for index, adapter in enumerate(adapters):
        name = f"adapter{index}"
        source, hub = _adapter_source(adapter, adapter_option)
        with hub_errors_as_one_line(adapter, adapter_option):
            # the Hub arguments go in adapter_kwargs: transformers passes them to every download of the adapter
            model.load_adapter(source, adapter_name=name, adapter_kwargs=dict(hub) or None)
        names.append(name)
    if names:
        model.set_adapter(names)
        if scale is not None:
            for name in names:
                set_adapter_scale(model, scale, name)
    return model, tokenizer


def _vllm_sampler(
    base: ModelSpec, adapters: Sequence[str], scale: float | None, adapter_option: str, engine: dict[str, Any] | None
):
    """A vLLM engine on ``base`` with the adapters attached in order (vLLM's own reader takes the Hub ids)."""
    # vLLM logs to stdout by default: keep the command's stdout for the answers (read when vLLM is first imported)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from steering_adapter.runtimes.vllm.sampler import VllmSampler  # lazy: the sampler imports vLLM

    specs = [{"path": _adapter_source(adapter, adapter_option)[0], "scale": scale} for adapter in adapters]
    return VllmSampler.from_model_spec(base, adapters=specs, **(engine or {}))


def placement_overrides(args: argparse.Namespace) -> dict[str, str]:
    """``--dtype`` / ``--device`` / ``--device-map`` (the placement options of ``eval``, ``generate`` and ``chat``) as
    ``ModelSpec`` overrides: only the options given, ``--device-map`` as the ``device``."""
    placement = {}
    if getattr(args, "dtype", None):
        placement["dtype"] = args.dtype
    if getattr(args, "device", None):
        placement["device"] = args.device
    if getattr(args, "device_map", None):
        placement["device"] = args.device_map
    return placement
