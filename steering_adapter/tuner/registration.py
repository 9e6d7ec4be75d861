"""Registration of the ``STEERING`` method with PEFT.

PEFT only registers methods whose upper-cased name is a member of its :class:`~peft.PeftType` enum, and Python
enums cannot be subclassed or extended with public API. We add the member the same way :mod:`enum` builds its own
members (value map, member map, member names, class attribute), which works on Python 3.11–3.13, and then call
PEFT's public :func:`peft.utils.register_peft_method`. Both steps are idempotent.
"""

from __future__ import annotations

import enum

from peft.utils import PeftType, register_peft_method

METHOD_NAME = "steering"
PEFT_TYPE_NAME = "STEERING"
PREFIX = "steering_"


def _add_enum_member(enum_cls: type[enum.Enum], name: str, value: str) -> enum.Enum:
    """Add ``name = value`` to a ``str``-valued enum in place and return the member (idempotent)."""
    if name in enum_cls.__members__:
        return enum_cls[name]
    if value in enum_cls._value2member_map_:
        raise RuntimeError(f"{enum_cls.__name__} already has a member with value {value!r}")
    member = str.__new__(enum_cls, value)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = enum_cls
    member.__init__(value)
    # Python >= 3.12 keeps a sort order used by Flag arithmetic and repr; harmless for a plain str enum.
    member._sort_order_ = len(enum_cls._member_names_)
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[value] = member
    enum_cls._member_names_.append(name)
    # Class attribute access (PeftType.STEERING). EnumType.__setattr__ refuses to rebind members, so go through type.
    type.__setattr__(enum_cls, name, member)
    return member


def register() -> PeftType:
    """Make ``PeftType.STEERING`` exist and register the steering tuner with PEFT. Safe to call repeatedly.

    Returns:
        The ``PeftType.STEERING`` member.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    from .config import SteeringConfig
    from .model import SteeringModel

    member = _add_enum_member(PeftType, PEFT_TYPE_NAME, PEFT_TYPE_NAME)
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is SteeringConfig:
        return member
    if member in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise RuntimeError(
            f"PEFT already has a different method registered as {PEFT_TYPE_NAME!r} "
            f"({PEFT_TYPE_TO_CONFIG_MAPPING[member].__name__}); cannot register steering_adapter's."
        )
    register_peft_method(name=METHOD_NAME, config_cls=SteeringConfig, model_cls=SteeringModel, prefix=PREFIX)
    return member
