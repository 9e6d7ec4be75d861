"""The steering method as a PEFT tuner, laid out like PEFT's own tuners (config / layer / model)."""

from .config import SteeringConfig, check_adapter_name
from .layer import SteeringLayer
from .model import SteeringModel, set_adapter_scale, steering_disabled
from .registration import register

__all__ = [
    "SteeringConfig",
    "check_adapter_name",
    "SteeringLayer",
    "SteeringModel",
    "register",
    "set_adapter_scale",
    "steering_disabled",
]
