"""Pure-Python twin of the stream pump's per-chunk bookkeeping (compiled: _speedups/pump.pyx).

Sans-IO: the frontend and backend await sockets and streams; these objects only decide which
bytes go out and when reading must pause, so both twins can be checked against each other.

* :class:`BodyFramer` turns HTTP/3 DATA frame pieces into HTTP/1.1 body bytes: one chunk per
  DATA frame (its size is known when the frame starts, so the payload streams through without
  buffering) or raw bytes counted against a Content-Length.
* :class:`FlowMarks` is the pause/resume accounting of a receive queue (high and low marks).
"""

from __future__ import annotations

from ptproxy.errors import BodyLengthError

__all__ = ["BodyFramer", "FlowMarks"]

_CRLF = b"\r\n"


class BodyFramer:
    """DATA frame pieces → HTTP/1.1 body bytes.

    ``chunked``: emit one chunk per DATA frame; otherwise copy bytes, checking ``length`` (None =
    unknown, e.g. close-delimited). ``discard``: a body that must not be written (HEAD, 304).
    """

    __slots__ = ("chunked", "length", "discard", "received")

    def __init__(self, chunked: bool, length: int | None, discard: bool = False) -> None:
        self.chunked = chunked
        self.length = length
        self.discard = discard
        self.received = 0

    def feed(self, data: bytes, frame_size: int | None, frame_end: bool) -> bytes:
        """Bytes to write for one piece; raises BodyLengthError past the Content-Length."""
        self.received += len(data)
        if self.discard:
            return b""
        if self.chunked:
            if frame_size is not None:
                if frame_size == 0:
                    return b""  # an empty DATA frame must not become the last-chunk
                head = b"%x\r\n" % frame_size
                return head + data + _CRLF if frame_end else head + data
            return data + _CRLF if frame_end else data
        if self.length is not None and self.received > self.length:
            raise BodyLengthError(f"body longer than its Content-Length {self.length}")
        return data

    def finish(self) -> None:
        """The stream ended: raise BodyLengthError if the body is short of its Content-Length."""
        if self.length is not None and not self.chunked and not self.discard and self.received != self.length:
            raise BodyLengthError(f"body of {self.received} bytes, Content-Length said {self.length}")


class FlowMarks:
    """Byte accounting with hysteresis: pause above ``high``, resume at or below ``low``."""

    __slots__ = ("high", "low", "queued", "paused")

    def __init__(self, high: int, low: int) -> None:
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low <= high")
        self.high = high
        self.low = low
        self.queued = 0
        self.paused = False

    def add(self, n: int) -> bool:
        """Account ``n`` queued bytes; True when the caller must pause reading now."""
        self.queued += n
        if not self.paused and self.queued > self.high:
            self.paused = True
            return True
        return False

    def remove(self, n: int) -> bool:
        """Account ``n`` consumed bytes; True when the caller must resume reading now."""
        self.queued -= n
        if self.paused and self.queued <= self.low:
            self.paused = False
            return True
        return False
