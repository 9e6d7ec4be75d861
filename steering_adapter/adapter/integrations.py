"""Steering adapters in transformers' and PEFT's own loading calls: checked at load time, embedded bases offline.

PEFT's flows (``PeftModel.from_pretrained``, ``PeftModel.load_adapter``, ``AutoPeftModelForCausalLM``) call
:meth:`SteeringConfig.from_pretrained <steering_adapter.tuner.config.SteeringConfig.from_pretrained>`, which checks
the weights file against the config before anything is attached. transformers' flows (``model.load_adapter``,
``AutoModelForCausalLM.from_pretrained(adapter)``) build the config and copy the tensors into the model with no
method of ours in between, and a tensor they cannot place is only logged. :func:`install` (run by
``import steering_adapter``) therefore wraps three functions; each wrapper only adds checks, and leaves every
non-steering adapter to the original code:

- ``transformers.integrations.peft.PeftAdapterMixin.load_adapter``: a ``STEERING`` adapter is checked against its
  config and the model (files, keys, shapes, dtypes, finite values, layers, hidden size, depth, gate) *before*
  transformers touches the model, and every vector is checked again after the load;
- ``find_adapter_config_file`` as transformers' ``from_pretrained`` and ``AutoModel*.from_pretrained`` see it: an
  ``adapter_config.json`` that is not valid JSON is reported with its path, line and column, and a steering adapter
  computed on an embedded model (``base_model_name_or_path: "steering-adapter:organism"`` or another
  :mod:`steering_adapter.models.embedded` id) names that model's local folder as its base model, so nothing is looked
  up on
  the Hub;
- ``peft.config.PeftConfigMixin.from_json_file``: a malformed ``adapter_config.json`` names its path (PEFT's own
  message does not), and a steering config with an unknown key (a misspelt ``"scael"``) is refused, naming the key
  and the nearest known one (PEFT would drop it with a generic warning);
- ``peft.PeftModel.create_or_update_model_card``: ``save_pretrained`` of a steering adapter writes this package's
  card (not PEFT's blank template) and keeps its front matter (PEFT would replace the tags and set ``base_model`` to
  a local folder).
"""

from __future__ import annotations

import atexit
import copy
import functools
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import transformers.integrations.peft as transformers_peft
import transformers.models.auto.auto_factory as auto_factory
from peft import PeftModel
from peft.config import PeftConfigMixin

from steering_adapter.adapter.cards import merge_card_after_peft, write_model_card_from_config
from steering_adapter.models.embedded import embedded_folder, is_embedded
from steering_adapter.tuner.config import SteeringConfig, check_adapter_name, config_from_dict
from steering_adapter.tuner.files import (
    CONFIG_NAME,
    HUB_KWARGS,
    read_json_file,
    resolve_adapter_file,
    validate_vectors,
)
from steering_adapter.tuner.layer import SteeringLayer
from steering_adapter.tuner.model import check_model_fits
from steering_adapter.tuner.validation import validate_adapter_folder

__all__ = ["check_steering_adapter", "install"]

_WRAPPED = "__steering_adapter_wrapped__"


def _mark(wrapper: Callable) -> Callable:
    setattr(wrapper, _WRAPPED, True)
    return wrapper


def check_steering_adapter(model: Any, path_or_repo_id: str, **hub_kwargs: Any) -> Any | None:
    """Check a steering adapter folder or Hub repo against ``model`` without attaching anything.

    Args:
        model: the transformers model the adapter is meant for.
        path_or_repo_id: adapter folder or Hub repo id.
        hub_kwargs: ``revision``, ``token``, ``subfolder``, ... as for ``hf_hub_download``.

    Returns:
        The adapter's :class:`~steering_adapter.SteeringConfig`, or ``None`` when the folder holds another PEFT
        method (not ours to check).

    Raises:
        ValueError: naming the file and the problem (see
            :func:`~steering_adapter.tuner.validation.validate_adapter_folder`, which runs the checks: invalid JSON,
            an unknown key, an invalid config field, pickle-only weights, a missing / extra / unexpected tensor, wrong
            shape or dtype, NaN/Inf, a zero vector to ablate, hidden size or depth of another model, layers out of
            range, a condition tensor without condition fields or the reverse).
    """

    subfolder = hub_kwargs.pop("subfolder", None) or None
    config_file = resolve_adapter_file(path_or_repo_id, CONFIG_NAME, subfolder=subfolder, **hub_kwargs)
    if read_json_file(config_file).get("peft_type") != "STEERING":
        return None
    return validate_adapter_folder(path_or_repo_id, model=model, subfolder=subfolder, **hub_kwargs)


def _check_state_dict(model: Any, peft_config: Any, state_dict: dict) -> bool:
    """``load_adapter(peft_config=..., adapter_state_dict=...)``: the same checks on tensors given in memory.

    Returns:
        Whether the adapter is a steering adapter (checked).
    """

    if isinstance(peft_config, dict):
        if peft_config.get("peft_type") != "STEERING":
            return False
        peft_config = config_from_dict(peft_config, "peft_config")
    if not isinstance(peft_config, SteeringConfig):
        return False
    fitted = copy.deepcopy(peft_config)
    blocks_path, _ = check_model_fits(fitted, model)
    validate_vectors(
        state_dict,
        fitted.layers,
        blocks_path,
        fitted.hidden_size,
        "adapter_state_dict",
        fitted.condition_layer,
        fitted.mode,
    )
    return True


def _loaded_vectors_are_finite(model: Any, adapter_name: str) -> str | None:
    """The first loaded vector of ``adapter_name`` that is not finite (never set by the load), as a message."""

    for module in model.modules():
        if not isinstance(module, SteeringLayer):
            continue
        for kind, store in (("steering vector", module.steering_vector), ("condition", module.steering_condition)):
            if adapter_name in store and not bool(store[adapter_name].isfinite().all()):
                return f"{kind} of adapter {adapter_name!r} on block {module.layer_index} was not loaded"
    return None


def _checked_load_adapter(original: Callable) -> Callable:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def load_adapter(self, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        arguments = bound.arguments
        extra = arguments.get("kwargs") or {}
        peft_model_id = arguments.get("peft_model_id")
        peft_config = arguments.get("peft_config")
        state_dict = arguments.get("adapter_state_dict")
        adapter_name = arguments.get("adapter_name") or "default"
        if peft_config is not None and state_dict is not None:
            steering = _check_state_dict(self, peft_config, state_dict)
        elif peft_config is None and isinstance(peft_model_id, (str, os.PathLike)):
            hub: dict[str, Any] = {}
            load_config = arguments.get("load_config")
            if load_config is not None:
                hub.update(getattr(load_config, "download_kwargs", None) or {})
            hub.update(extra)
            hub.update(arguments.get("adapter_kwargs") or {})
            if arguments.get("local_files_only"):
                hub["local_files_only"] = True
            hub = {k: v for k, v in hub.items() if k in (*HUB_KWARGS, "subfolder") and v is not None}
            steering = check_steering_adapter(self, os.fspath(peft_model_id), **hub) is not None
        else:
            steering = False
        if steering:
            check_adapter_name(adapter_name)
        result = original(*bound.args, **bound.kwargs)
        if steering:
            problem = _loaded_vectors_are_finite(self, adapter_name)
            if problem is not None:
                self.delete_adapter(adapter_name)
                raise ValueError(f"{peft_model_id or 'adapter_state_dict'}: {problem}; the adapter was removed")
        return result

    return _mark(load_adapter)


_EMBEDDED_CONFIGS: dict[str, str] = {}


def _config_naming_local_base(config_file: str, data: dict[str, Any]) -> str:
    """A copy of an embedded-model adapter's config whose base model is that model's local folder (per process)."""
    key = os.path.realpath(config_file)
    if key not in _EMBEDDED_CONFIGS:
        folder = tempfile.mkdtemp(prefix="steering-adapter-embedded-config-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # nothing left behind in the temp folder
        path = os.path.join(folder, CONFIG_NAME)
        base = embedded_folder(data["base_model_name_or_path"])
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({**data, "base_model_name_or_path": base}, handle)
        _EMBEDDED_CONFIGS[key] = path
    return _EMBEDDED_CONFIGS[key]


def _checked_find_adapter_config_file(original: Callable) -> Callable:
    @functools.wraps(original)
    def find_adapter_config_file(*args: Any, **kwargs: Any) -> str | None:
        config_file = original(*args, **kwargs)
        if config_file is None or not os.path.isfile(config_file):
            return config_file
        data = read_json_file(config_file)  # a syntax error names the file, line and column
        if data.get("peft_type") == "STEERING" and is_embedded(data.get("base_model_name_or_path")):
            return _config_naming_local_base(config_file, data)
        return config_file

    return _mark(find_adapter_config_file)


def _named_from_json_file(original: Callable) -> Callable:
    function = original.__func__

    @functools.wraps(function)
    def from_json_file(cls, path_json_file: str, **kwargs: Any) -> dict[str, Any]:
        try:
            data = function(cls, path_json_file, **kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path_json_file} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path_json_file} must hold a JSON object, got {type(data).__name__}")
        if data.get("peft_type") == "STEERING":
            _check_config_fields(path_json_file, data)
        return data

    return classmethod(_mark(from_json_file))


def _check_config_fields(path: str, data: dict[str, Any]) -> None:
    """Every key and field of a steering adapter's config, with the file named (PEFT builds the config without it,
    and would drop an unknown key with a generic warning)."""

    config_from_dict(data, path)


def _steering_model_card(original: Callable) -> Callable:
    @functools.wraps(original)
    def create_or_update_model_card(self, output_dir: str) -> None:

        config = self.peft_config.get(self.active_adapter) if isinstance(self.active_adapter, str) else None
        if not isinstance(config, SteeringConfig):
            return original(self, output_dir)
        path = os.path.join(output_dir, "README.md")
        if not os.path.exists(path):
            write_model_card_from_config(output_dir, config.to_dict())
        original(self, output_dir)
        merge_card_after_peft(path, config.to_dict())

    return _mark(create_or_update_model_card)


def install() -> None:
    """Install the load-time checks and the offline resolution of embedded base models (idempotent; see the module
    docstring)."""

    mixin = transformers_peft.PeftAdapterMixin
    if not getattr(mixin.load_adapter, _WRAPPED, False):
        mixin.load_adapter = _checked_load_adapter(mixin.load_adapter)
    for module in (transformers_peft, auto_factory):
        finder = getattr(module, "find_adapter_config_file", None)
        if finder is not None and not getattr(finder, _WRAPPED, False):
            module.find_adapter_config_file = _checked_find_adapter_config_file(finder)
    if not getattr(PeftModel.create_or_update_model_card, _WRAPPED, False):
        PeftModel.create_or_update_model_card = _steering_model_card(PeftModel.create_or_update_model_card)
    reader = PeftConfigMixin.__dict__["from_json_file"]
    if not getattr(reader.__func__, _WRAPPED, False):
        PeftConfigMixin.from_json_file = _named_from_json_file(reader)
