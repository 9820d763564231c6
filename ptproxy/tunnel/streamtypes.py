"""The values a request stream carries and the states of its halves (see ``ptproxy.tunnel.stream``).

Apart from the stream record (``ptproxy.tunnel.streamrec``, twins) so both twins and the facade
import them from one place without a cycle.
"""

from __future__ import annotations

import enum

from aioquic.h3.connection import ErrorCode

from ptproxy.errors import StreamAborted  # re-exported: defined in the one error tree
from ptproxy.tunnel.aioquic.h3 import DataFrame
from ptproxy.values import FrozenValue, set_field

__all__ = [
    "H3_INTERNAL_ERROR",
    "H3_MESSAGE_ERROR",
    "H3_REQUEST_CANCELLED",
    "H3_REQUEST_INCOMPLETE",
    "H3_REQUEST_REJECTED",
    "DataFrame",
    "HalfState",
    "Headers",
    "StreamAborted",
    "StreamEnded",
    "StreamEvent",
]

H3_REQUEST_CANCELLED = int(ErrorCode.H3_REQUEST_CANCELLED)
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
H3_REQUEST_INCOMPLETE = int(ErrorCode.H3_REQUEST_INCOMPLETE)
H3_MESSAGE_ERROR = int(ErrorCode.H3_MESSAGE_ERROR)
# RFC 9114 8.1: the request was not processed at all (safe to send again elsewhere or later).
H3_REQUEST_REJECTED = int(ErrorCode.H3_REQUEST_REJECTED)


class Headers(FrozenValue):
    """A HEADERS frame: request or response head (1xx interim included), or trailers.

    A frozen value written out (ptproxy/values.py), not a frozen dataclass: less to do at every
    start of an end; equality, hash, repr and assignment as the dataclass had."""

    __slots__ = ("headers", "stream_ended")
    __match_args__ = ("headers", "stream_ended")

    headers: list[tuple[bytes, bytes]]
    stream_ended: bool

    def __init__(self, headers: list[tuple[bytes, bytes]], stream_ended: bool) -> None:
        set_field(self, "headers", headers)
        set_field(self, "stream_ended", stream_ended)


class StreamEnded(FrozenValue):
    """The peer finished its half of the stream (FIN). No fields (a frozen value, see Headers)."""

    __slots__ = ()


StreamEvent = Headers | DataFrame | StreamEnded


class HalfState(enum.Enum):
    """Where one half (send or receive) of a stream is. It leaves OPEN at most once."""

    OPEN = "open"
    CLOSED = "closed"  # ended by a FIN: sent (send half) or handed to the application (receive)
    RESET = "reset"  # aborted: RESET_STREAM or STOP_SENDING, from either end, or abandoned
