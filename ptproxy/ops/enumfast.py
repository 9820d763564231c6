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

__all__ = ["drop_enum_getattr", "identity_enum_hash", "members_in_class_dicts"]


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


def identity_enum_hash() -> bool:
    """Hash the members of plain enums in C, by identity, instead of ``Enum.__hash__``'s
    ``hash(self._name_)``; whether that is their hash now. Only before any plain enum has a member.

    ``Enum.__hash__`` is a Python function, so every dict or set lookup keyed by a plain enum
    member (aioquic's per-``Epoch`` dicts, our tables keyed by ``BodyKind`` and the like) made a
    Python call through ``slot_tp_hash``: ~45 per request at each end, ~27,000 instructions of
    ~1.25M (callgrind). A plain enum compares by identity (``Enum`` defines no ``__eq__``;
    members, aliases and ``Flag``'s pseudo-members are singletons), so the identity hash is as
    valid as the name's. Enums with a data type (``IntEnum``, ``class X(str, Enum)``) take that
    type's ``__eq__`` and ``__hash__`` ahead of ``Enum`` in their MRO, and an enum class that
    defines ``__eq__`` has its own ``__hash__`` (or ``None``): neither is affected.

    A hash must not change under a container that holds it, so this switches only while no plain
    enum member exists yet (none can be a key, or part of one, anywhere): ``python -m ptproxy``
    calls it before importing anything else of ours. Later, it changes nothing and says False."""
    if enum.Enum.__dict__.get("__hash__") is object.__hash__:
        return True  # done already
    if enum.Enum.__eq__ is not object.__eq__:
        return False
    name_hash = enum.Enum.__dict__.get("__hash__")
    for cls in _enum_classes():
        if cls.__hash__ is name_hash and cls._member_map_:
            return False
    enum.Enum.__hash__ = object.__hash__  # type: ignore[method-assign]
    return True
