"""``SteeringConfig``: the configuration of a steering adapter (``adapter_config.json``).

The required fields follow the on-disk contract (format v1): ``layers``, ``scale``, ``layer_scales``, ``mode``,
``positions``, ``hidden_size``, ``num_hidden_layers`` plus PEFT's own ``peft_type``, ``task_type``,
``base_model_name_or_path`` and ``revision``. Everything else is optional.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from peft.config import PeftConfig
from peft.utils import PeftType

from steering_adapter.models.embedded import embedded_id, is_embedded, resolve_embedded
from steering_adapter.tuner.constants import PEFT_TYPE_NAME, PREFIX
from steering_adapter.tuner.files import CONFIG_NAME, check_adapter_weights, read_config_dict

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


def check_adapter_name(name: object) -> str:
    """The one rule for adapter names (attached adapters, composition parts, CLI and recipe names).

    A name is 1-64 characters of letters, digits, ``_`` and ``-`` (not starting with ``-``): it is a key of PEFT's
    parameter dicts (no ``.``), a folder name inside a composition (no ``/``, ``..`` or absolute path), and it must
    not be part of PEFT's parameter prefix ``steering_`` (PEFT would confuse its keys with the vectors').

    Returns:
        ``name``.

    Raises:
        ValueError: naming the rule the name breaks.
    """
    if not isinstance(name, str) or not _ADAPTER_NAME.match(name):
        raise ValueError(
            f"invalid adapter name {name!r}: use 1-64 letters, digits, '_' or '-' (not starting with '-'), e.g. "
            "'no_refusal'"
        )
    if name in PREFIX:
        raise ValueError(f"invalid adapter name {name!r}: it is part of the parameter prefix {PREFIX!r}; pick another")
    return name


MODES = ("add", "ablate")
POSITIONS = ("all",)
FORMAT_VERSION = 1


@dataclass
class SteeringConfig(PeftConfig):
    """Configuration of a steering adapter.

    A steering adapter adds ``scale * layer_scales[i] * v_i`` to the output hidden state of each decoder block ``i``
    in ``layers`` (``mode="add"``), or removes the component along ``v_i`` (``mode="ablate"``), at every token
    position, during prompt processing and every decoding step.

    Args:
        layers (`list[int]`):
            0-based indices of the decoder blocks whose **output** is steered. Block ``i`` output is transformers'
            ``hidden_states[i + 1]`` and llama.cpp's control-vector tensor ``direction.{i}`` (llama.cpp adds
            ``direction.N`` to the output of block ``N`` and has none for block 0; see
            :mod:`steering_adapter.runtimes.export`).
        scale (`float`, defaults to 1.0):
            Global multiplier α. Negative values remove the behaviour the vectors point to (for refusal vectors:
            fewer refusals); positive values induce it.
        layer_scales (`dict[str, float]`, *optional*):
            Per-layer multiplier ``s_i``; keys are layer indices as strings. Missing layers use 1.0.
        mode (`str`, defaults to ``"add"``):
            ``"add"``: ``h <- h + scale * s_i * v_i``. ``"ablate"``: ``h <- h - (h . u_i) u_i`` with
            ``u_i = v_i / ||v_i||`` (directional ablation; ``scale`` and ``layer_scales`` are ignored).
        positions (`str`, defaults to ``"all"``):
            Which token positions are steered. Only ``"all"`` (every position) is defined in format v1.
        hidden_size (`int`, *optional*):
            Hidden size of the model the vectors belong to. Checked at attach time; filled from the model when
            left empty.
        num_hidden_layers (`int`, *optional*):
            Number of decoder blocks of that model. Checked at attach time; filled from the model when left empty.
        blocks_path (`str`, *optional*):
            Dotted path of the ``nn.ModuleList`` of text decoder blocks, for architectures that are not found
            automatically (see :mod:`steering_adapter.tuner.blocks`). Leave empty for Llama, Qwen, Gemma, GPT-2, ...
        init_vectors (`str`, defaults to ``"unset"``):
            Initial value of vectors created before weights are loaded. ``"unset"`` (NaN) makes a vector that was
            never loaded fail loudly at the first forward pass; ``"zeros"`` starts from a no-op, for training.
        condition_layer (`int`, *optional*):
            Condition-gated steering (as in Conditional Activation Steering): the block whose output, during prompt
            processing, decides for each sequence whether this adapter steers it. The projection of that block's
            output (at ``condition_position``) on the unit condition vector ``c`` (tensor key
            ``base_model.model.<blocks path>.<condition_layer>.steering_condition``) is compared with
            ``condition_threshold``; the decision holds for every decoding step of that sequence. Must not be
            deeper than the first steered block. ``None``: always steer (format v1 default).
        condition_threshold (`float`, *optional*):
            Threshold of the gate (required with ``condition_layer``).
        condition_comparator (`str`, defaults to ``"greater"``):
            Steer when the projection is ``"greater"`` (or ``"less"``) than the threshold.
        condition_position (`str`, defaults to ``"last"``):
            ``"last"`` prompt token or ``"mean"`` over the prompt's tokens (padding excluded).
        steering_metadata (`dict`, *optional*):
            Provenance: method (MD/RMD/WRMD), λ, judge, datasets and sizes, selection metrics, library version,
            creation time. Never affects behaviour.
        inference_mode (`bool`, defaults to True):
            Vectors are frozen (``requires_grad=False``). Set ``False`` to train them with PEFT as usual.
        format_version (`int`, defaults to 1):
            Version of the on-disk steering-adapter contract.
    """

    inference_mode: bool = field(
        default=True, metadata={"help": "steering vectors are computed, not trained: frozen unless set to False"}
    )
    layers: list[int] = field(default_factory=list, metadata={"help": "0-based indices of steered decoder blocks"})
    scale: float = field(default=1.0, metadata={"help": "global multiplier alpha"})
    layer_scales: dict[str, float] | None = field(default=None, metadata={"help": "per-layer multipliers"})
    mode: str = field(default="add", metadata={"help": "'add' or 'ablate'"})
    positions: str = field(default="all", metadata={"help": "token positions that are steered"})
    hidden_size: int | None = field(default=None, metadata={"help": "hidden size of the base model"})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "number of decoder blocks of the base"})
    blocks_path: str | None = field(default=None, metadata={"help": "explicit path of the decoder-block list"})
    init_vectors: str = field(default="unset", metadata={"help": "'unset' (NaN until loaded) or 'zeros'"})
    condition_layer: int | None = field(
        default=None, metadata={"help": "block whose output decides, per sequence, whether to steer (gating)"}
    )
    condition_threshold: float | None = field(default=None, metadata={"help": "gate threshold on the projection"})
    condition_comparator: str = field(default="greater", metadata={"help": "'greater' or 'less' than threshold"})
    condition_position: str = field(default="last", metadata={"help": "'last' prompt token or 'mean' over it"})
    steering_metadata: dict[str, Any] | None = field(default=None, metadata={"help": "provenance (free form)"})
    format_version: int = field(default=FORMAT_VERSION, metadata={"help": "steering adapter format version"})

    def __post_init__(self) -> None:
        super().__post_init__()
        # An embedded model's id (e.g. the organism's) resolves to its local folder, so AutoPeftModel loads it
        # offline; to_dict writes the id back.
        self.base_model_name_or_path = resolve_embedded(self.base_model_name_or_path)
        self.peft_type = PeftType[PEFT_TYPE_NAME]
        if self.task_type is None:
            self.task_type = "CAUSAL_LM"
        self.validate()

    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the bad one."""
        if isinstance(self.layers, int) or not isinstance(self.layers, (list, tuple)):
            raise ValueError(f"SteeringConfig.layers must be a list of block indices, got {self.layers!r}")
        layers = list(self.layers)
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ValueError(f"SteeringConfig.layers must hold non-negative ints, got {layer!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"SteeringConfig.layers has duplicates: {layers}")
        self.layers = sorted(layers)
        if self.num_hidden_layers is not None:
            bad = [layer for layer in self.layers if layer >= self.num_hidden_layers]
            if bad:
                raise ValueError(
                    f"unknown layer index {bad}: the model has num_hidden_layers={self.num_hidden_layers} "
                    f"(valid 0..{self.num_hidden_layers - 1})"
                )
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}; expected one of {MODES}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; format v1 defines {POSITIONS}")
        if not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool) or not math.isfinite(self.scale):
            raise ValueError(f"SteeringConfig.scale must be a finite number, got {self.scale!r}")
        self.scale = float(self.scale)
        if self.layer_scales is not None:
            cleaned: dict[str, float] = {}
            for key, value in self.layer_scales.items():
                if str(key) not in {str(layer) for layer in self.layers}:
                    raise ValueError(f"layer_scales has key {key!r}, which is not in layers {self.layers}")
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"layer_scales[{key!r}] must be a finite number, got {value!r}")
                cleaned[str(key)] = float(value)
            self.layer_scales = cleaned
        for name in ("hidden_size", "num_hidden_layers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"SteeringConfig.{name} must be a positive int, got {value!r}")
        if self.condition_layer is not None:
            layer = self.condition_layer
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ValueError(f"condition_layer must be a non-negative int, got {layer!r}")
            if self.num_hidden_layers is not None and layer >= self.num_hidden_layers:
                raise ValueError(
                    f"unknown condition_layer {layer}: the model has num_hidden_layers={self.num_hidden_layers}"
                )
            if self.layers and layer > min(self.layers):
                raise ValueError(
                    f"condition_layer {layer} is deeper than the first steered block {min(self.layers)}: the gate "
                    "must be decided before any steering of the prompt"
                )
            threshold = self.condition_threshold
            if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
                raise ValueError(f"condition_threshold must be a finite number when gated, got {threshold!r}")
            self.condition_threshold = float(threshold)
        if self.condition_comparator not in ("greater", "less"):
            raise ValueError(f"condition_comparator must be 'greater' or 'less', got {self.condition_comparator!r}")
        if self.condition_position not in ("last", "mean"):
            raise ValueError(f"condition_position must be 'last' or 'mean', got {self.condition_position!r}")
        if self.init_vectors not in ("unset", "zeros"):
            raise ValueError(f"init_vectors must be 'unset' or 'zeros', got {self.init_vectors!r}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"adapter format_version {self.format_version} is newer than this library supports "
                f"({FORMAT_VERSION}); upgrade steering-adapter"
            )

    @property
    def gated(self) -> bool:
        """Whether this adapter steers only the sequences its condition selects."""
        return self.condition_layer is not None

    def target_layers(self) -> list[int]:
        """Blocks that need a wrapper: the steered ones and the condition block."""
        extra = [self.condition_layer] if self.condition_layer is not None else []
        return sorted(set(self.layers) | set(extra))

    def layer_scale(self, layer: int) -> float:
        """The per-layer multiplier ``s_i`` (1.0 when not given)."""
        if not self.layer_scales:
            return 1.0
        return float(self.layer_scales.get(str(layer), 1.0))

    def effective_scale(self, layer: int) -> float:
        """``scale * s_i``: the factor applied to ``v_i`` in ``add`` mode."""
        return self.scale * self.layer_scale(layer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """Load the config and check the adapter's weights file against it before anything is attached.

        Refuses unknown keys (:func:`check_config_keys`), adapters that carry no safetensors weights (pickle files
        are never read) and weights that do not fit the config (see
        :func:`steering_adapter.tuner.files.validate_vectors`); errors name the file. This is the check every loader
        runs; :func:`steering_adapter.tuner.validation.validate_adapter_folder` is its public entry point.
        """

        where = "/".join(part for part in (str(pretrained_model_name_or_path), subfolder, CONFIG_NAME) if part)
        try:
            config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            raise ValueError(message if CONFIG_NAME in message else f"{where}: {message}") from None
        # PEFT drops unknown keys with a generic warning and uses the defaults: refuse them (the file is local now)
        check_config_keys(read_config_dict(pretrained_model_name_or_path, subfolder=subfolder, **kwargs), where)
        config._steering_config_file = where
        config._steering_weights_file = check_adapter_weights(
            config.layers,
            config.hidden_size,
            config.condition_layer,
            pretrained_model_name_or_path,
            subfolder=subfolder,
            mode=config.mode,
            **kwargs,
        )
        return config

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["layers"] = list(self.layers)
        if is_embedded(data.get("base_model_name_or_path")):
            data["base_model_name_or_path"] = embedded_id(data["base_model_name_or_path"])
        return data


def config_keys() -> frozenset[str]:
    """Every key ``adapter_config.json`` of a steering adapter may hold: the dataclass fields of
    :class:`SteeringConfig`, which include those PEFT writes for any ``PeftConfig`` (``peft_type``, ``task_type``,
    ``base_model_name_or_path``, ``revision``, ``inference_mode``, ``auto_mapping``, ``peft_version``, ...)."""
    return frozenset(item.name for item in fields(SteeringConfig))


def check_config_keys(data: dict[str, Any], source: str) -> None:
    """Refuse keys that are not fields of :class:`SteeringConfig` (a misspelt ``"scael"`` would otherwise be dropped
    with PEFT's generic warning, and the default used).

    A config of a newer format (``format_version`` above this library's) is left to
    :meth:`SteeringConfig.validate`, which asks for an upgrade: its new keys are expected.

    Args:
        data: the raw ``adapter_config.json``.
        source: what the message names (the file).

    Raises:
        ValueError: ``<source>: unknown key 'scael' (did you mean 'scale'?)``.
    """
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return
    known = config_keys()
    unknown = sorted(str(key) for key in data if key not in known)
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    what = "unknown key" if len(unknown) == 1 else "unknown keys"
    raise ValueError(
        f"{source}: {what} {', '.join(named)}; a steering adapter config holds only SteeringConfig's fields "
        "(provenance goes under steering_metadata)"
    )


def config_from_dict(data: dict[str, Any], source: str) -> SteeringConfig:
    """A :class:`SteeringConfig` from an ``adapter_config.json`` dict: unknown keys refused, every field checked.

    Args:
        data: the dict (``peft_type`` may be present).
        source: what the messages name (the file).

    Raises:
        ValueError: ``<source>: <problem>`` (an unknown key, an invalid field).
    """
    check_config_keys(data, source)
    try:
        return SteeringConfig(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None
