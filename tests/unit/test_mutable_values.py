"""wire/h3map.py's TunnelRequest / TunnelResponse and splice.py's SpliceResult are written out on
values.MutableValue (start-up cost), not @dataclass(slots=True): they behave as the mutable, slotted
dataclasses they replace, defined again here as the reference."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from ptproxy.splice import SpliceResult
from ptproxy.wire.events import BodyKind
from ptproxy.wire.h3map import TunnelRequest, TunnelResponse


@dataclass(slots=True)
class RefRequest:
    method: bytes
    authority: bytes
    path: bytes
    fields: list[tuple[bytes, bytes]]
    body: BodyKind
    content_length: int | None
    protocol: bytes | None = None


@dataclass(slots=True)
class RefResponse:
    status: int
    fields: list[tuple[bytes, bytes]]
    content_length: int | None


@dataclass(slots=True)
class RefSplice:
    clean: bool
    reason: str
    to_stream: int
    to_socket: int
    seconds: float


CASES: list[tuple[Any, Any, tuple[Any, ...], dict[str, Any]]] = [
    (TunnelRequest, RefRequest, (b"GET", b"h", b"/", [(b"a", b"1")], BodyKind.NONE, None), {}),
    (TunnelRequest, RefRequest, (b"CONNECT", b"h", b"/", [], BodyKind.CHUNKED, None), {"protocol": b"websocket"}),
    (TunnelResponse, RefResponse, (200, [(b"x", b"y")], 5), {}),
    (SpliceResult, RefSplice, (True, "", 10, 20), {"seconds": 0.5}),
]


@pytest.mark.parametrize(("cls", "ref", "args", "kwargs"), CASES)
def test_they_behave_as_the_slotted_dataclasses_they_replace(
    cls: Any, ref: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    ours, theirs = cls(*args, **kwargs), ref(*args, **kwargs)
    names = [f.name for f in dataclasses.fields(ref)]
    assert cls.__slots__ == tuple(names) == cls.__match_args__ == ref.__match_args__
    assert repr(ours) == repr(theirs).replace(ref.__qualname__, cls.__qualname__, 1)
    assert ours == cls(*args, **kwargs) and not (ours != cls(*args, **kwargs))
    assert ours != theirs  # another class, as between two dataclasses
    assert ours.__eq__(theirs) is NotImplemented
    with pytest.raises(TypeError):
        hash(ours)
    with pytest.raises(TypeError):
        hash(theirs)
    with pytest.raises(AttributeError):
        ours.extra = 1  # slotted: no other attribute
    other = cls(*args, **kwargs)
    setattr(other, names[1], "changed")  # fields are assignable
    assert getattr(other, names[1]) == "changed" and other != ours
    for maker in (cls, ref):
        with pytest.raises(TypeError):
            maker(*args[:-1])  # a required argument missing
        with pytest.raises(TypeError):
            maker(*args, *([None] * (len(names) - len(args) + 1)))  # one argument too many


def test_the_request_default_and_is_connect() -> None:
    plain = TunnelRequest(b"CONNECT", b"h:1", b"", [], BodyKind.NONE, None)
    assert plain.protocol is None and plain.is_connect
    assert not TunnelRequest(b"CONNECT", b"h", b"/", [], BodyKind.NONE, None, b"websocket").is_connect
    assert not TunnelRequest(b"GET", b"h", b"/", [], BodyKind.NONE, None).is_connect
