"""The steering method as a PEFT tuner, laid out like PEFT's own tuners (config / layer / model)."""

from steering_adapter.tuner.config import SteeringConfig, check_adapter_name
from steering_adapter.tuner.layer import SteeringLayer
from steering_adapter.tuner.model import SteeringModel, set_adapter_scale, steering_disabled
from steering_adapter.tuner.registration import register
from steering_adapter.tuner.validation import describe_adapter, validate_adapter_folder

__all__ = [
    "SteeringConfig",
    "check_adapter_name",
    "describe_adapter",
    "SteeringLayer",
    "SteeringModel",
    "register",
    "set_adapter_scale",
    "steering_disabled",
    "validate_adapter_folder",
]
