"""HTTP/3: aioquic's H3Connection, reporting DATA frame boundaries and never dying of one request.

* Content-Length: aioquic closes the *whole connection* when one stream's body length does not match
  its content-length (and for HEAD responses, where it legitimately differs). The application checks
  lengths per stream instead and never takes the session down for one request.
* DATA frame boundaries: the relay needs the declared size of each DATA frame as it starts, to emit
  exactly one HTTP/1.1 chunk per frame while streaming its payload.
* Stream state: aioquic keeps a reset stream's H3 state forever; we drop it when both halves are
  over, and drop (not misparse) what still arrives for a stream the application is done with.
* QPACK decoder instructions wait for a packet: aioquic writes the Section Acknowledgment of each
  header block that used the dynamic table at once, which made a packet of its own per request in
  each direction (ahead of the response, at the server end). They are held until this end sends on
  a request stream or an ACK is due (the connection asks before building packets), so they ride
  with the response, the next request or the delayed ACK: at most the ACK delay later.
* GOAWAY: aioquic neither sends it nor reports one received (it skips the payload). A server end
  handing over to a new process (SIGUSR2) sends one; a client end receiving it dials a new session
  before the old one closes (``goaway_received``, checked by the session after each event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pylsqpack
from aioquic.buffer import encode_uint_var
from aioquic.h3 import connection as h3c
from aioquic.h3.events import DataReceived, H3Event
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent, StreamDataReceived, StreamReset

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
        # Request streams the application is done with whose peer half may still carry data.
        self._ptp_ignored: set[int] = set()
        # QPACK decoder instructions not written to the decoder stream yet (see the docstring).
        self._ptp_held_decoder = bytearray()
        # Packets that carry only QPACK stream data are counted as such (connection.py).
        set_qpack = getattr(quic, "set_qpack_streams", None)
        if set_qpack is not None:
            set_qpack(frozenset(s for s in (self._local_encoder_stream_id, self._local_decoder_stream_id) if s is not None))
        hold = getattr(quic, "set_held_data", None)
        if hold is not None:
            hold(self.release_decoder)
        else:  # a plain QuicConnection would never ask: nothing may be held
            self._ptp_held_decoder = None  # type: ignore[assignment]

    goaway_received = False

    def _check_control_frame_type(self, frame_type: int) -> None:
        super()._check_control_frame_type(frame_type)
        # Called as the frame header is parsed; the payload (a stream id) is not needed: every
        # request this end has sent so far is served, as the server end sends the largest id.
        if frame_type == h3c.FrameType.GOAWAY:
            self.goaway_received = True

    def send_goaway(self, stream_id: int) -> None:
        """GOAWAY on our control stream: requests on streams below ``stream_id`` are still served."""
        if self._local_control_stream_id is not None:
            frame = h3c.encode_frame(h3c.FrameType.GOAWAY, encode_uint_var(stream_id))
            self._ptp_quic.send_stream_data(self._local_control_stream_id, frame)

    # -- QPACK decoder instructions ----------------------------------------------------------

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> h3c.Headers:
        # aioquic's, except that the decoder instructions are held (see release_decoder).
        try:
            if frame_data is None:
                decoder, headers = self._decoder.resume_header(stream_id)
            else:
                decoder, headers = self._decoder.feed_header(stream_id, frame_data)
        except pylsqpack.DecompressionFailed as exc:
            raise h3c.QpackDecompressionFailed() from exc
        if decoder:
            self._decoder_bytes_sent += len(decoder)
            held = self._ptp_held_decoder
            if held is None:
                self._ptp_quic.send_stream_data(self._local_decoder_stream_id, decoder)
            else:
                held += decoder
        return headers

    def release_decoder(self) -> None:
        """Write the held QPACK decoder instructions to the decoder stream (in their order)."""
        held = self._ptp_held_decoder
        if held:
            self._ptp_quic.send_stream_data(self._local_decoder_stream_id, bytes(held))  # type: ignore[arg-type]
            held.clear()

    def send_headers(self, stream_id: int, headers: h3c.Headers, end_stream: bool = False) -> None:
        self.release_decoder()  # the held instructions ride in the same packet
        super().send_headers(stream_id, headers, end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.release_decoder()
        super().send_data(stream_id, data, end_stream)

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
        if stream.stream_id in self._ptp_ignored:
            # Forgotten by the application (see forget_stream): drop what still arrives.
            stream.receiving_ended = stream.receiving_ended or stream_ended
            return []
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
        self.release_decoder()
        self._ptp_quic.send_stream_data(stream_id, b"", end_stream=True)

    def forget_stream(self, stream_id: int) -> None:
        """The application is done with this request stream: free its state as soon as QUIC allows.

        Our sending half is over (finished or reset). If the peer's half is still open at the QUIC
        level (we sent STOP_SENDING, or stopped reading), frames may still be in flight: the
        stream's state is kept, but what arrives is dropped, until its FIN or RESET_STREAM.
        Dropping the state at once would let that data start a fresh stream mid-frame, which
        aioquic treats as a connection error (H3_FRAME_ERROR) and the whole tunnel dies.
        """
        self._ptp_in_frame.discard(stream_id)
        stream = self._stream.get(stream_id)
        if stream is None:
            return
        stream.sending_ended = True
        if stream.receiving_ended:
            self._stream.pop(stream_id, None)
        else:
            stream.buffer = b""
            self._ptp_ignored.add(stream_id)

    def handle_event(self, event: QuicEvent) -> list[H3Event]:
        if isinstance(event, StreamReset):
            # aioquic may write a Stream Cancellation for it: after what is held, in order.
            self.release_decoder()
        events = super().handle_event(event)
        # A forgotten stream's last frame (FIN or reset) has come: aioquic has freed its state.
        if self._ptp_ignored and (
            isinstance(event, StreamReset) or (isinstance(event, StreamDataReceived) and event.end_stream)
        ):
            self._ptp_ignored.discard(event.stream_id)
        return events
