"""HTTP/3: aioquic's H3Connection, reporting DATA frame boundaries and never dying of one request.

* Content-Length: aioquic closes the *whole connection* when one stream's body length does not match
  its content-length (and for HEAD responses, where it legitimately differs). The application checks
  lengths per stream instead and never takes the session down for one request.
* DATA frame boundaries: the relay needs the declared size of each DATA frame as it starts, to emit
  exactly one HTTP/1.1 chunk per frame while streaming its payload.
* Stream state: aioquic keeps a reset stream's H3 state forever; we drop it when we are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aioquic.h3 import connection as h3c
from aioquic.h3.events import DataReceived, H3Event
from aioquic.quic.connection import QuicConnection

__all__ = ["DataFrame", "PatchedH3Connection"]


@dataclass(frozen=True, slots=True)
class DataFrame(H3Event):
    """A piece of one HTTP/3 DATA frame's payload.

    ``frame_size`` is the whole frame's declared payload size when this piece starts a frame, else
    None; ``frame_end`` tells whether this piece completes the frame.
    """

    stream_id: int
    data: bytes
    frame_size: int | None
    frame_end: bool
    stream_ended: bool


class PatchedH3Connection(h3c.H3Connection):
    """H3Connection that reports DATA frame boundaries and leaves Content-Length to the app."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._ptp_quic = quic  # our own reference: aioquic's is private
        # Streams in the middle of a DATA frame (its header, with the size, already reported).
        self._ptp_in_frame: set[int] = set()

    def _check_content_length(self, stream: h3c.H3Stream) -> None:
        # Checked per stream by the application (tunnel/stream.py), never connection-fatal.
        return None

    def _handle_request_or_push_frame(
        self,
        frame_type: int,
        frame_data: bytes | None,
        stream: h3c.H3Stream,
        stream_ended: bool,
    ) -> list[H3Event]:
        if frame_type != h3c.FrameType.DATA:
            return super()._handle_request_or_push_frame(frame_type, frame_data, stream, stream_ended)
        if stream.headers_recv_state != h3c.HeadersState.AFTER_HEADERS:
            raise h3c.FrameUnexpected("DATA frame is not allowed in this state")
        data = frame_data or b""
        # aioquic already subtracted this piece: remaining is None when the frame is complete.
        remaining = stream.frame_size or 0
        sid = stream.stream_id
        starts = sid not in self._ptp_in_frame
        frame_end = stream.frame_size is None
        if frame_end:
            self._ptp_in_frame.discard(sid)
        else:
            self._ptp_in_frame.add(sid)
        if not data and not stream_ended and not starts:
            return []
        return [
            DataFrame(
                stream_id=sid,
                data=data,
                frame_size=len(data) + remaining if starts else None,
                frame_end=frame_end,
                stream_ended=stream_ended,
            )
        ]

    def _receive_request_or_push_data(
        self, stream: h3c.H3Stream, data: bytes, stream_ended: bool
    ) -> list[H3Event]:
        events = super()._receive_request_or_push_data(stream, data, stream_ended)
        # aioquic's fast path for DATA fragments emits DataReceived directly: a middle piece of a
        # frame whose header (and size) we already saw.
        out: list[H3Event] = []
        for ev in events:
            if isinstance(ev, DataReceived):
                out.append(
                    DataFrame(
                        stream_id=ev.stream_id,
                        data=ev.data,
                        frame_size=None,
                        frame_end=False,
                        stream_ended=ev.stream_ended,
                    )
                )
            else:
                out.append(ev)
        return out

    def finish_stream(self, stream_id: int) -> None:
        """End our sending half with a bare FIN, without the empty DATA frame ``send_data`` writes."""
        # aioquic's _get_or_create_stream is a context manager: on exit it drops the stream's
        # state once both halves are over, as its own send_data does.
        with self._get_or_create_stream(stream_id) as stream:
            stream.sending_ended = True
        self._ptp_quic.send_stream_data(stream_id, b"", end_stream=True)

    def end_stream_ended(self, stream_id: int) -> None:
        """Mark our sending half finished without a frame (after a reset), so the stream is freed."""
        stream = self._stream.get(stream_id)
        if stream is not None:
            stream.sending_ended = True
            stream.receiving_ended = True
            self._stream.pop(stream_id, None)
        self._ptp_in_frame.discard(stream_id)
