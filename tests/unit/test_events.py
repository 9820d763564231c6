"""wire/events.py's classes are written out (start-up cost), not @dataclass: they behave as the
frozen, slotted dataclasses they replace, defined again here as the reference."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from ptproxy.wire import events as ev
from ptproxy.wire.events import BodyKind, Fields


@dataclass(frozen=True, slots=True, kw_only=True)
class _MessageHead:
    headers: Fields
    http_version: tuple[int, int]
    keep_alive: bool
    body: BodyKind
    content_length: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHead(_MessageHead):
    method: bytes
    target: bytes
    expect_continue: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHead(_MessageHead):
    status: int
    reason: bytes


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class ChunkComplete:
    pass


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: Fields = field(default_factory=list)


HEAD = {"headers": [(b"Host", b"a")], "http_version": (1, 1), "keep_alive": True, "body": BodyKind.LENGTH,
        "content_length": 5}
CASES: list[tuple[type[Any], type[Any], tuple[Any, ...], dict[str, Any]]] = [
    (ev.RequestHead, RequestHead, (), {**HEAD, "method": b"GET", "target": b"/x", "expect_continue": False}),
    (ev.ResponseHead, ResponseHead, (), {**HEAD, "status": 200, "reason": b"OK"}),
    (ev.BodyData, BodyData, (b"data",), {}),
    (ev.ChunkComplete, ChunkComplete, (), {}),
    (ev.EndOfMessage, EndOfMessage, (), {}),
    (ev.EndOfMessage, EndOfMessage, ([(b"X-T", b"1")],), {}),
]


@pytest.mark.parametrize(("ours_cls", "twin_cls", "args", "kwargs"), CASES)
def test_events_behave_as_the_frozen_dataclasses_they_replace(
    ours_cls: type[Any], twin_cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    ours, twin = ours_cls(*args, **kwargs), twin_cls(*args, **kwargs)
    names = [f.name for f in dataclasses.fields(twin_cls)]
    assert list(ours_cls.__slots__) == names
    assert [getattr(ours, n) for n in names] == [getattr(twin, n) for n in names]
    assert repr(ours) == repr(twin)
    assert ours == ours_cls(*args, **kwargs) and not (ours != ours_cls(*args, **kwargs))
    assert ours != twin  # another class, as between two dataclasses
    assert ours_cls.__match_args__ == twin_cls.__match_args__
    if all(not isinstance(getattr(ours, n), list) for n in names):
        assert hash(ours) == hash(twin)
    else:
        with pytest.raises(TypeError):
            hash(ours)
        with pytest.raises(TypeError):
            hash(twin)
    for n in [*names, "other"]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ours, n, 1)
    if names:
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(ours, names[0])
    assert not hasattr(ours, "__dict__")
    if names:
        changed = {names[-1]: "changed"}
        assert repr(ours.replace(**changed)) == repr(dataclasses.replace(twin, **changed))
        assert ours.replace() == ours and ours.replace() is not ours
        with pytest.raises(TypeError):
            ours.replace(nope=1)


def test_heads_are_keyword_only_and_trailers_default_to_a_new_list() -> None:
    for ours_cls, twin_cls, _, kwargs in CASES[:2]:
        for cls in (ours_cls, twin_cls):
            with pytest.raises(TypeError):
                cls(*kwargs.values())
            with pytest.raises(TypeError):
                cls(**{k: v for k, v in kwargs.items() if k != "headers"})
    a, b = ev.EndOfMessage(), ev.EndOfMessage()
    assert a.trailers == [] and a.trailers is not b.trailers
    assert ev.EndOfMessage(None).trailers is None  # as the dataclass: only a missing argument defaults


def test_events_match_as_before() -> None:
    match ev.BodyData(b"x"):
        case ev.BodyData(data):
            assert data == b"x"
    match ev.RequestHead(**CASES[0][3]):
        case ev.RequestHead(method=method, keep_alive=True):
            assert method == b"GET"
