"""Events the HTTP/1.1 parsers emit (h11 ``_events.py`` style: frozen, slotted, named after protocol nouns).

A message is always ``RequestHead``/``ResponseHead``, then zero or more ``BodyData`` (with a
``ChunkComplete`` after the data of each HTTP/1.1 chunk when the body is chunked), then exactly one
``EndOfMessage``. A 1xx interim response is a ``ResponseHead`` followed directly by ``EndOfMessage``.
"""

from __future__ import annotations

import enum
from typing import Any

from ptproxy.values import FrozenValue, set_field

__all__ = [
    "BodyData",
    "BodyKind",
    "ChunkComplete",
    "EndOfMessage",
    "Event",
    "Fields",
    "RequestHead",
    "ResponseHead",
]

Fields = list[tuple[bytes, bytes]]


class BodyKind(enum.Enum):
    """How the body of a message is delimited (RFC 9112 section 6.3)."""

    NONE = "none"
    """No body: no framing header on a request; HEAD, 1xx, 204 and 304 responses."""
    LENGTH = "length"
    """``Content-Length`` bytes follow (possibly zero)."""
    CHUNKED = "chunked"
    """``Transfer-Encoding: chunked``."""
    CLOSE = "close"
    """Read until the connection closes (responses only, RFC 9112 6.3 rule 8)."""


class _Event(FrozenValue):
    """Frozen, slotted value objects written out (ptproxy/values.py), not
    ``@dataclass(frozen=True, slots=True)``: the six classes cost ~22M instructions (~3 ms) at every
    start of both ends as dataclasses. Same behaviour as the dataclasses they replace
    (tests/unit/test_events.py compares them): keyword-only heads, equality and hash over the
    fields in order, the same repr and match arguments, assignment raising ``FrozenInstanceError``;
    :meth:`replace` stands in for ``dataclasses.replace``."""

    __slots__ = ()


_set = set_field


class _MessageHead(_Event):
    """What request and response heads have in common (keyword-only: the start line comes first
    in each subclass's own fields, but after these in the constructor)."""

    __slots__ = ()
    _HEAD = ("headers", "http_version", "keep_alive", "body", "content_length")

    headers: Fields
    """Every field line as received: original name case, value with surrounding OWS stripped, in order."""
    http_version: tuple[int, int]
    """``(1, 1)`` or ``(1, 0)``."""
    keep_alive: bool
    """Whether the connection persists after this exchange (RFC 9112 section 9.3)."""
    body: BodyKind
    """How the body is delimited: ``NONE`` (also for HEAD, 1xx, 204, 304 responses), ``LENGTH``,
    ``CHUNKED``, or ``CLOSE`` (responses only)."""
    content_length: int | None
    """The declared length when ``body`` is ``LENGTH``, else None (the header itself stays in ``headers``)."""


class RequestHead(_MessageHead):
    __slots__ = (*_MessageHead._HEAD, "method", "target", "expect_continue")

    method: bytes
    """The method token as received, e.g. ``b"GET"``."""
    target: bytes
    """The request-target: origin-form (``/path?q``) or ``*`` (OPTIONS only)."""
    expect_continue: bool
    """``Expect: 100-continue`` was sent: the client waits for an interim response (RFC 9110 10.1.1)."""

    def __init__(
        self,
        *,
        headers: Fields,
        http_version: tuple[int, int],
        keep_alive: bool,
        body: BodyKind,
        content_length: int | None,
        method: bytes,
        target: bytes,
        expect_continue: bool,
    ) -> None:
        _set(self, "headers", headers)
        _set(self, "http_version", http_version)
        _set(self, "keep_alive", keep_alive)
        _set(self, "body", body)
        _set(self, "content_length", content_length)
        _set(self, "method", method)
        _set(self, "target", target)
        _set(self, "expect_continue", expect_continue)


class ResponseHead(_MessageHead):
    __slots__ = (*_MessageHead._HEAD, "status", "reason")

    status: int
    """Status code, 100..599."""
    reason: bytes
    """Reason phrase as received (it is replaced by the standard one when re-serialized)."""

    def __init__(
        self,
        *,
        headers: Fields,
        http_version: tuple[int, int],
        keep_alive: bool,
        body: BodyKind,
        content_length: int | None,
        status: int,
        reason: bytes,
    ) -> None:
        _set(self, "headers", headers)
        _set(self, "http_version", http_version)
        _set(self, "keep_alive", keep_alive)
        _set(self, "body", body)
        _set(self, "content_length", content_length)
        _set(self, "status", status)
        _set(self, "reason", reason)


class BodyData(_Event):
    __slots__ = ("data",)
    __match_args__ = ("data",)

    data: bytes
    """A piece of body: never empty. Chunk boundaries are reported by ``ChunkComplete``, not by pieces."""

    def __init__(self, data: bytes) -> None:
        _set(self, "data", data)


class ChunkComplete(_Event):
    """The data of one HTTP/1.1 chunk has ended (chunked bodies only; never for the zero-size last-chunk).

    The tunnel maps one chunk to one HTTP/3 DATA frame, preserving chunk boundaries end to end."""

    __slots__ = ()


_NO_TRAILERS: Any = object()  # EndOfMessage(): a new empty list each time (a default factory)


class EndOfMessage(_Event):
    __slots__ = ("trailers",)
    __match_args__ = ("trailers",)

    trailers: Fields
    """Trailer fields of a chunked body as received (empty otherwise)."""

    def __init__(self, trailers: Fields = _NO_TRAILERS) -> None:
        _set(self, "trailers", [] if trailers is _NO_TRAILERS else trailers)


Event = RequestHead | ResponseHead | BodyData | ChunkComplete | EndOfMessage
