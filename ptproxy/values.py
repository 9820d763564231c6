"""Frozen, slotted value objects written out by hand, for classes on the path to serving.

``@dataclass(frozen=True, slots=True)`` generates and compiles each class's methods when its module
is imported (and builds a slotted class twice): ~0.5 ms per class, paid at every start of an end.
:class:`FrozenValue` gives the same behaviour once, for every subclass: equality and hash over the
fields (``__slots__``) in order, the dataclass repr, assignment raising ``FrozenInstanceError``,
and :meth:`FrozenValue.replace` standing in for ``dataclasses.replace``. A subclass declares its
``__slots__`` (and ``__match_args__``) and sets its fields in ``__init__`` with :data:`set_field`.
:class:`MutableValue` is the same for ``@dataclass(slots=True)``: equality over the fields, the
dataclass repr, assignable fields, no hash.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any, Self

__all__ = ["FrozenValue", "MutableValue", "set_field"]

#: Sets a field of a frozen value (in ``__init__``): ``set_field(self, "name", value)``.
set_field = object.__setattr__


class FrozenValue:
    """Base of immutable value objects compared by their fields, as frozen dataclasses are."""

    __slots__: tuple[str, ...] = ()
    __match_args__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__slots__])
        return f"{self.__class__.__qualname__}({fields})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (field name -> value), as ``dataclasses.replace``."""
        unknown = changes.keys() - set(self.__slots__)
        if unknown:
            raise TypeError(f"{self.__class__.__qualname__} has no field {sorted(unknown)[0]!r}")
        new = object.__new__(self.__class__)
        for name in self.__slots__:
            set_field(new, name, changes[name] if name in changes else getattr(self, name))
        return new


class MutableValue:
    """Base of mutable value objects compared by their fields, as ``@dataclass(slots=True)`` classes
    are: equality over the fields (``__slots__``) in order, the dataclass repr, unhashable."""

    __slots__: tuple[str, ...] = ()
    __match_args__: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # as a dataclass with eq and without frozen

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self.__slots__
        return tuple([getattr(self, name) for name in names]) == tuple([getattr(other, name) for name in names])

    def __repr__(self) -> str:
        fields = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__slots__])
        return f"{self.__class__.__qualname__}({fields})"
