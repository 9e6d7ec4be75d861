"""Registration of the ``STEERING`` method with PEFT.

PEFT only registers methods whose upper-cased name is a member of its :class:`~peft.PeftType` enum, and Python
enums cannot be subclassed or extended with public API. We add the member the same way :mod:`enum` builds its own
members (value map, member map, member names, class attribute), which works on Python 3.11–3.13, and then call
PEFT's public :func:`peft.utils.register_peft_method`. Both steps are idempotent.
"""

from __future__ import annotations

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import PeftType, register_peft_method

from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.constants import METHOD_NAME, PEFT_TYPE_NAME, PREFIX
from steering_adapter.tuner.enum_members import add_enum_member
from steering_adapter.tuner.model import SteeringModel


def register() -> PeftType:
    """Make ``PeftType.STEERING`` exist and register the steering tuner with PEFT. Safe to call repeatedly.

    Returns:
        The ``PeftType.STEERING`` member.
    """
    member = add_enum_member(PeftType, PEFT_TYPE_NAME, PEFT_TYPE_NAME)
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is SteeringConfig:
        return member
    if member in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise RuntimeError(
            f"PEFT already has a different method registered as {PEFT_TYPE_NAME!r} "
            f"({PEFT_TYPE_TO_CONFIG_MAPPING[member].__name__}); cannot register steering_adapter's."
        )
    register_peft_method(name=METHOD_NAME, config_cls=SteeringConfig, model_cls=SteeringModel, prefix=PREFIX)
    return member
