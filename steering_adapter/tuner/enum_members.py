"""Adding a member to an existing ``str``-valued :class:`enum.Enum` (needed because PEFT's ``PeftType`` is closed).

Standard library only, so it can be tested on every supported Python without importing torch or peft.
"""

from __future__ import annotations

import enum


def add_enum_member(enum_cls: type[enum.Enum], name: str, value: str) -> enum.Enum:
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
