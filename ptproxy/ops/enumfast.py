"""Enum members read at the speed of plain class attributes (Python 3.11).

On 3.11 ``enum.EnumType`` defines ``__getattr__``, so *every* attribute read on an enum class
(``Epoch.ONE_RTT``, ``BodyKind.NONE``, ``QuicFrameType.ACK``) takes CPython's slow path: the
type's ``tp_getattro`` becomes ``slot_tp_getattr_hook``, which looks up ``__getattribute__`` and
``__getattr__`` on the metaclass before the ordinary lookup, and the interpreter cannot specialise
the read. Measured: 75 ns per read against 16 ns for a plain class attribute; aioquic and ptproxy
do ~50 such reads per request at each end (callgrind: ~46,000 instructions per request at the
client end, 3.5 % of it).

The hook is dead weight on 3.11: ``EnumType.__new__`` puts every member (and alias) into its
class's ``__dict__`` — the member itself, or a redirecting property where a member's name clashes
with an inherited descriptor — so the ordinary lookup always finds it and ``__getattr__`` only ever
raises ``AttributeError`` for names that are not members. Python 3.12 removed the method for that
reason (members became descriptors). :func:`drop_enum_getattr` removes it in a ``python -m
ptproxy`` process (the interpreter belongs to the end), after checking that claim for the enums
already defined: should any member be missing from its class's ``__dict__``, nothing is changed.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator

__all__ = ["drop_enum_getattr", "members_in_class_dicts"]


def _enum_classes() -> Iterator[type[enum.Enum]]:
    todo = [enum.Enum]
    while todo:
        cls = todo.pop()
        yield cls
        todo.extend(cls.__subclasses__())


def members_in_class_dicts() -> bool:
    """Whether every member name of every enum class defined so far is in its class's
    ``__dict__`` (what makes ``EnumType.__getattr__`` unreachable for members)."""
    for cls in _enum_classes():
        if any(name not in cls.__dict__ for name in cls._member_map_):
            return False
    return True


def drop_enum_getattr() -> bool:
    """Remove ``EnumType.__getattr__`` on Python < 3.12 when it is provably unreachable for
    members; whether it is gone now."""
    if "__getattr__" not in enum.EnumType.__dict__:
        return True  # 3.12+, or done already
    if sys.version_info >= (3, 12) or not members_in_class_dicts():
        return False
    delattr(enum.EnumType, "__getattr__")
    return True
