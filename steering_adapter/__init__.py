"""steering-adapter: refusal steering vectors as shareable PEFT adapters.

Importing this package registers the ``STEERING`` adapter type with PEFT, so the usual calls work::

    import steering_adapter
    model.load_adapter("org/no-political-refusal")          # transformers
    PeftModel.from_pretrained(model, "org/no-political-refusal")
"""

from __future__ import annotations

from .versions import check_versions

check_versions()

from .tuner import SteeringConfig, SteeringLayer, SteeringModel, register, set_adapter_scale  # noqa: E402

register()

from .builder import adapter_from_vectors, save_adapter  # noqa: E402
from .hub import push_adapter  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "SteeringConfig",
    "SteeringLayer",
    "SteeringModel",
    "adapter_from_vectors",
    "check_versions",
    "push_adapter",
    "register",
    "save_adapter",
    "set_adapter_scale",
]
