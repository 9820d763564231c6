"""One QUIC connection carrying HTTP/3: the I/O edge around aioquic's sans-IO connection.

A Session owns a PatchedQuicConnection and a PatchedH3Connection, feeds them datagrams and timer
ticks, and routes their events to :class:`TunnelStream` objects. Time comes from
``time.monotonic()``, never ``loop.time()``: uvloop's loop clock is cached at 1 ms resolution, and
aioquic's pacer then spins on sub-millisecond timers (measured: 12 Mbit/s at 100 % CPU instead of
~200 Mbit/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aioquic.h3.events import HeadersReceived
from aioquic.quic import events as qe

from ptproxy.errors import SessionClosed  # re-exported: defined in the one error tree
from ptproxy.tunnel.aioquic import (
    DataFrame,
    PatchedH3Connection,
    PatchedQuicConnection,
    connection_stats,
    handshake_confirmed,
    is_client,
    lost_packets,
    packets_sent,
    peer_max_streams_bidi,
    pending_close,
    send_window,
    stream_send_buffered,
)
from ptproxy.tunnel.identity import PeerIdentity
from ptproxy.tunnel.stream import (
    H3_REQUEST_REJECTED,
    Headers,
    StreamAborted,
    StreamEnded,
    TunnelStream,
)

__all__ = ["Session", "SessionClosed"]

logger = logging.getLogger("ptproxy.tunnel")

# Sends a transmit's datagrams to one address, in order (a DatagramSocket's send).
SendBatch = Callable[[list[bytes], Any], None]

# The largest client-initiated bidirectional stream id (a multiple of 4 below 2**62).
MAX_CLIENT_BIDI_STREAM_ID = 2**62 - 4

# StreamEnded has no fields: one instance serves every stream.
_ENDED = StreamEnded()

# A timer firing this early counts as on time (uvloop's timers have 1 ms resolution).
TIMER_SLACK = 0.001

# An armed timer this much earlier than aioquic's deadline is re-armed rather than left to fire
# early. A deadline moving later is common: an ACK that was due in ACK_DELAY leaves with the
# response, and the deadline becomes the probe timeout ~an RTT away; left armed, the timer woke
# each end once per exchange for nothing (linkbench, 50 ms link, sequential GETs: ~1 wake-up per
# request at each end, each an epoll return, a context switch and a re-arm anyway). Re-arming
# costs a cancel and a call_later (~2 us); the margin bounds how often a bulk transfer, whose
# every transmit pushes the loss deadline a little later, re-arms (at most every 5 ms).
STALE_TIMER_MARGIN = 0.005

# Client end, the transmits right after its handshake completed with requests open (a resumed
# session's 0-RTT requests, e.g. at a blackout's end): each one that handed events over leaves its
# send (the Finished, the ACKs) for one loop step, at most this many times. The server end's 0.5-RTT
# response usually arrives ~1 ms behind its handshake answer, while this end is still processing
# the answer: the loop then reads it, and the waiting reader writes it to its HTTP/1.1 client
# before the send, instead of after it (see Session.transmit).
DELIVER_FIRST_STEPS = 2


class Session:
    """A QUIC + HTTP/3 connection bound to a datagram sender."""

    _answer_first = False  # server end, until its first transmit (_answer_handshake)
    _deliver_first = 0  # client end, after its handshake: transmits that send one step later

    def __init__(
        self,
        quic: PatchedQuicConnection,
        send: SendBatch,
        *,
        number: int,
        peer: Any,
        send_window: int,
        keep_alive_interval: float,
        on_request: Callable[[TunnelStream], None] | None = None,
        on_closed: Callable[[Session], None] | None = None,
    ) -> None:
        self.quic = quic
        self.h3: PatchedH3Connection | None = None
        self.number = number
        self.peer = peer
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._on_request = on_request
        self._on_closed = on_closed
        self._streams: dict[int, TunnelStream] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # aioquic's deadline
        self._timer_fires_at = 0.0  # what the armed timer was set for
        self._transmit_handle: asyncio.Handle | None = None
        self._events_due = False  # datagrams were received whose events wait for the transmit
        self._stream_ended = False  # the events handled last ended a stream's receiving half
        # Server end: its first transmit answers the handshake before handling the events (transmit).
        self._answer_first = not is_client(quic)
        self._send_window = send_window
        self._room_waiters: list[asyncio.Future[None]] = []
        # Requests waiting for a stream, in arrival order, with their deadlines; granted ones hold
        # a slot until they open. One timer for the whole queue expires the overdue ones.
        self._slot_waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._slots_granted = 0
        self._queue_timer: asyncio.TimerHandle | None = None
        self._queue_timer_at = 0.0
        self._keep_alive_interval = keep_alive_interval
        self._keep_alive: asyncio.TimerHandle | None = None
        self._last_activity = time.monotonic()
        self.handshake_done = False
        self.confirmed: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        # Set once the peer's HTTP/3 SETTINGS arrived (on its control stream, after the handshake).
        self.settings_received: asyncio.Future[None] = self._loop.create_future()
        # Set when aioquic itself is done with the connection (after draining): the socket may go.
        self.finished: asyncio.Future[None] = self._loop.create_future()
        # Client: the server end sent GOAWAY (it hands over to a new process): dial a new session.
        self.goaway: asyncio.Future[None] = self._loop.create_future()
        self.close_reason: str | None = None
        self.early_data_accepted = False
        self.session_resumed = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.transmits = 0
        self._opened_streams = 0
        self._next_stream_id = 0
        self._draining = False
        self.log = logging.LoggerAdapter(logger, {"conn": number})

    # -- I/O edge -----------------------------------------------------------------------------

    @property
    def peer_identity(self) -> PeerIdentity | None:
        """Server end: the client certificate as this end verified it (see PatchedQuicConnection).

        Known once the handshake is complete, and for a resumed session already from its 0-RTT
        requests on (the ticket carries it); None on a client end, and for a session resumed from
        a ticket that carried no identity: routes with ``allowed_peers`` refuse such a session.
        """
        return self.quic.peer_identity

    @property
    def peer_settings(self) -> dict[int, int] | None:
        """The peer's HTTP/3 SETTINGS (identifier → value), None until they arrived."""
        return self.h3.received_settings if self.h3 is not None else None

    def connect(self, addr: Any) -> None:
        """Client: start the handshake towards ``addr``."""
        self.quic.connect(addr, now=time.monotonic())
        self._ensure_h3()
        self.transmit()
        self._schedule_keep_alive()

    def resend_handshake(self, *, with_next_send: bool = False) -> None:
        """Client: send the handshake again now (the server end was not listening yet).

        ``with_next_send``: queue it for this loop step's transmit instead of sending it alone
        at once, so that a request about to be written (as 0-RTT) leaves in the same datagram,
        behind the Initial it needs (see Dialer._hurry_early)."""
        if self.quic.resend_handshake(time.monotonic()):
            if with_next_send:
                self.transmit_soon()
            else:
                self.transmit()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Feed one datagram to aioquic; what it makes due goes out at the end of the iteration.

        Not transmitting here lets one transmit answer every datagram read in the same loop
        iteration (one ACK for a batch), and the tasks this batch woke add their data to it; only
        a long batch gets its ACK in the middle (``ack_flush_due``).
        """
        self.bytes_received += len(data)
        self.datagrams_received += 1
        self._last_activity = time.monotonic()
        quic = self.quic
        # With a lone stream (or none) open, the datagram's ACK frames wait until its events were
        # handed over (transmit); with several, they are processed at once (nothing is held then).
        lone = len(self._streams) <= 1
        quic.hold_acks(lone)
        try:
            quic.receive_datagram(data, addr, now=self._last_activity)
        except Exception:  # a bug must cost this connection, never the endpoint
            self.log.exception("connection %d: internal error handling a datagram", self.number)
            self.abort("internal error")
            return
        # Its events are handled with the read's others, by the transmit answering them: one
        # event for a run of one stream's packets (PatchedQuicConnection.next_event).
        self._events_due = True
        if self.quic.ack_flush_due():
            # Many packets of a fast sender wait for their ACK: it leaves now, before the rest of
            # this read is handled (see ACK_FLUSH_PACKETS); what comes later schedules again.
            if self._transmit_handle is not None:
                self._transmit_handle.cancel()
            self.transmit()
        elif quic.stream_end_pending() and not self._answer_first and not self._deliver_first:
            if not lone:
                # Several streams open (concurrent exchanges): the ends this datagram brings are
                # handed over now as well, so their readers' steps run at the loop's next step
                # rather than after the transmit's (one more poll, and the I/O it brings, ahead
                # of them). Nothing is held: the send stays the read's transmit, wherever this
                # read first asked for it.
                if self._handle_events():
                    self.transmit_soon()
                return
            # A lone stream's end (a GET at the server end, a response at the client end): its
            # events are handed over now, so the reader's step (the write to the origin / the
            # client) runs at the loop's next step, not after one more (a transmit's call_soon,
            # another poll). The send (held ACK frames, packets, timer) follows that step, as in
            # transmit: a transmit this read scheduled before (an ACK-only datagram ahead of this
            # one) becomes that send; what the rest of the read brings is handled there too.
            if self._transmit_handle is not None:
                self._transmit_handle.cancel()
                self._transmit_handle = None
            if not self._handle_events():
                return
            if self._stream_ended and len(self._streams) <= 1:
                self._transmit_handle = self._loop.call_soon(self._send_held)
            else:
                self.transmit_soon()
        else:
            self.transmit_soon()

    def transmit(self) -> None:
        """Send what aioquic has queued, re-arm its timer, wake writers waiting for buffer room."""
        self._transmit_handle = None
        if self._answer_first:
            self._answer_handshake()
            return
        events = self._events_due
        if events and not self._handle_events():
            return
        if self._deliver_first:
            # Client end, its handshake just completed with requests open. Sending now (Finished,
            # ACKs: ~0.4 M instructions) would go before a 0.5-RTT response that has arrived
            # meanwhile: the loop reads it only after this transmit, and the reader it wakes
            # writes it to its client one step after the next. So a transmit that handed events
            # over sends one loop step later: the loop reads what waits in the socket, the next
            # transmit hands it over, and the woken readers' steps (scheduled before it) write the
            # response before the send. At most DELIVER_FIRST_STEPS times, and only while events
            # come: a Finished held longer would hold the server end's sending to three times what
            # it received (its anti-amplification limit, RFC 9000 8.1) and the ACKs its sender.
            if events:
                self._deliver_first -= 1
                self._transmit_handle = self._loop.call_soon(self.transmit)
                return
            self._deliver_first = 0
        if (
            events
            and self._stream_ended
            and len(self._streams) <= 1
            and self.quic.acks_held()
            and not self.quic.ack_flush_due()
        ):
            # A lone stream's end (a request at the server end, a response at the client end)
            # woke its reader, whose step is now scheduled: it writes them to the origin / the
            # client before the ACK frames they came with are processed and the packets built
            # (one loop step later, _send_held), not after. With several streams open the send
            # stays here: their steps are many, and what the transmit carries (ACKs, window
            # updates) would wait for all of them (link_latency.txt section 3); a stream's data
            # before its end (a transfer) is not held either.
            self._transmit_handle = self._loop.call_soon(self._send_held)
            return
        self._send_due()
        self._arm_timer()
        if self._room_waiters:
            self._wake_room_waiters()

    def _send_held(self) -> None:
        """The send of a transmit that let the woken readers' steps go first (see transmit)."""
        self._transmit_handle = None
        if self._events_due and not self._handle_events():  # datagrams read meanwhile
            return
        self._send_due()  # the held ACK frames are processed first (datagrams_to_send)
        self._arm_timer()
        if self._room_waiters:
            self._wake_room_waiters()

    def _answer_handshake(self) -> None:
        """Server end, its first transmit: the handshake answer leaves first, then the events are
        handled; what they leave due goes with the next transmit (see below).

        The client end needs the answer before anything else (its 1-RTT keys come from it), and
        a resumed client's 0-RTT request, read with its ClientHello, made the usual order (events
        first: the request parsed and handed to the application, then the packets built) put the
        request's handling in front of the answer. The response cannot overtake the answer
        anyway: it follows the origin's reply, and the client end reads it only after it has
        processed the answer (a blackout's end, traced: the response waited ~1.7 ms there).
        A resumed session's HTTP/3 layer is made first, so its SETTINGS still ride with the answer."""
        self._answer_first = False
        if self.quic.tls.session_resumed:
            # Resumed: the ticket stands for a peer this end authenticated before. A new peer gets
            # the HTTP/3 layer (and its streams) only once its certificate was checked
            # (HandshakeCompleted): junk handshakes cost no HTTP/3 state and learn no SETTINGS.
            self._ensure_h3()
        self._send_due()
        if self._events_due and not self._handle_events():
            return
        # No transmit for what the events left due: nothing there is urgent (the 0-RTT packets
        # were acknowledged in the answer), and a transmit now sent the QPACK decoder's
        # acknowledgement of the request's headers alone, a datagram the client end then read
        # between the answer and the response. It rides with the response (whose send asks for a
        # transmit), or with the answer to the client's Finished, or the timer's transmit.
        self._arm_timer()

    def _handle_events(self) -> bool:
        """Hand the received datagrams' events to the application; False if a bug in doing so
        cost this connection (it is aborted)."""
        try:
            self._process_events()
        except Exception:  # a bug must cost this connection, never the endpoint
            self.log.exception("connection %d: internal error handling a datagram", self.number)
            self.abort("internal error")
            return False
        return True

    def _send_due(self) -> None:
        """Send what aioquic has due now."""
        now = time.monotonic()
        self.transmits += 1
        datagrams = self.quic.datagrams_to_send(now=now)
        if datagrams:
            self.bytes_sent += self._send_grouped(datagrams)
            self._last_activity = now

    def _send_grouped(self, datagrams: list[tuple[bytes, Any]]) -> int:
        """Hand the datagrams over in runs to one address (one batched send each); their bytes."""
        self.datagrams_sent += len(datagrams)
        send = self._send
        target = datagrams[0][1]
        run: list[bytes] = []
        size = 0
        for data, addr in datagrams:
            if addr != target:  # only while migrating or probing a path: rare
                send(run, target)
                run, target = [], addr
            run.append(data)
            size += len(data)
        send(run, target)
        return size

    def transmit_soon(self) -> None:
        """Coalesce transmits requested by the application within one loop iteration."""
        if self._transmit_handle is None:
            self._transmit_handle = self._loop.call_soon(self.transmit)

    def _arm_timer(self) -> None:
        # One timer, re-armed when aioquic's deadline moves earlier or much later: a deadline
        # moving a little later (every ACK pushes loss detection and the idle timeout) leaves the
        # armed timer alone, and when it fires early it simply re-arms. uvloop allocates a libuv
        # timer per call_later.
        timer_at = self.quic.get_timer()
        self._timer_at = timer_at
        if timer_at is None:
            return
        if self._timer is not None:
            if self._timer_fires_at <= timer_at < self._timer_fires_at + STALE_TIMER_MARGIN:
                return
            self._timer.cancel()
        self._timer_fires_at = timer_at
        self._timer = self._loop.call_later(max(0.0, timer_at - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        timer_at = self._timer_at
        if timer_at is None:
            return
        now = time.monotonic()
        # The loop may fire up to ~1 ms early (ms-resolution timers). A deadline that is more
        # than TIMER_SLACK away moved later since this timer was armed: re-arm for it.
        if timer_at > now + TIMER_SLACK:
            self._arm_timer()
            return
        if timer_at > now:
            # Early by less than the slack. aioquic sends a due ACK (and the pacer releases a
            # packet) from datagrams_to_send by the clock's time, so transmitting now sends
            # nothing and re-arming for the sub-millisecond rest fires at once again: the loop
            # spun until the clock got there (linkbench, sequential GETs: after 5-15 % of the
            # exchanges, runs of up to ~20 wake-ups over up to 0.6 ms). Wait one tick instead:
            # the ACK leaves at most TIMER_SLACK late (ACK_DELAY leaves that much room under
            # the max_ack_delay we advertise), a paced packet as it did before (the pacer then
            # asks for PACING_GRANULARITY more). Giving aioquic the deadline as the time
            # instead stamps packets in the future and runs its clock backwards at the next
            # receive (10 MiB downloads measured ~10 Mbit/s slower).
            self._timer_fires_at = timer_at
            self._timer = self._loop.call_later(TIMER_SLACK, self._on_timer)
            return
        self.quic.handle_timer(now=now)
        self._process_events()
        self.transmit()

    def _schedule_keep_alive(self) -> None:
        if self._keep_alive_interval > 0 and not self.closed.done():
            self._keep_alive = self._loop.call_later(self._keep_alive_interval, self._keep_alive_tick)

    def _keep_alive_tick(self) -> None:
        # Keep-alive: a PING after an interval of inactivity keeps NATs and the idle timer open.
        if self.closed.done():
            return
        if time.monotonic() - self._last_activity >= self._keep_alive_interval * 0.9:
            self.quic.send_keep_alive()
            self.transmit()
        self._schedule_keep_alive()

    # -- events -------------------------------------------------------------------------------

    def _ensure_h3(self) -> None:
        if self.h3 is None:
            self.h3 = PatchedH3Connection(self.quic)

    def _process_events(self) -> None:
        self._events_due = False
        self._stream_ended = False
        quic = self.quic
        while True:
            event = quic.next_event()
            if event is None:
                break
            self._handle_quic_event(event)
        if not self.closed.done():
            # Closing (by us or the peer) is final at once; aioquic only reports it after the
            # draining period (3 PTO), which would delay 503s and reconnects for seconds.
            pending = pending_close(quic)
            if pending is not None:
                self._terminated(_describe_close(pending))
        if self._slot_waiters and self.stream_slots_free() > 0:
            self._grant_slots()  # the peer's MAX_STREAMS arrived
        if self.h3 is not None and self.h3.goaway_received and not self.goaway.done():
            self.goaway.set_result(None)
        if (
            not self.confirmed.done()
            and is_client(quic)
            and handshake_confirmed(quic)
        ):
            self.confirmed.set_result(None)

    def _handle_quic_event(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived):
            if event.end_stream:
                self._stream_ended = True
            self._ensure_h3()
            assert self.h3 is not None
            h3_events = self.h3.handle_event(event)
            payload = 0
            for h3_event in h3_events:
                if isinstance(h3_event, DataFrame) and h3_event.stream_id == event.stream_id:
                    payload += len(h3_event.data)
                self._handle_h3_event(h3_event)
            # Framing overhead and control/QPACK streams are consumed right away; DATA payload
            # is credited when the application pulls it (TunnelStream.receive).
            self.quic.credit(event.stream_id, len(event.data) - payload)
            if not self.settings_received.done() and self.h3.received_settings is not None:
                self.settings_received.set_result(None)
        elif isinstance(event, qe.HandshakeCompleted):
            self._ensure_h3()
            self.handshake_done = True
            self.early_data_accepted = event.early_data_accepted
            self.session_resumed = event.session_resumed
            if not is_client(self.quic):
                if not self.confirmed.done():
                    self.confirmed.set_result(None)
            elif event.early_data_accepted and self._streams:
                # Requests went out as 0-RTT: their responses may be right behind the answer. (Had
                # the server end refused 0-RTT, they would leave now: nothing to hold for.)
                self._deliver_first = DELIVER_FIRST_STEPS
        elif isinstance(event, qe.StreamReset):
            self._ensure_h3()
            assert self.h3 is not None
            self.h3.handle_event(event)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._peer_reset(event.error_code)
                self.stream_maybe_done(stream)
        elif isinstance(event, qe.StopSendingReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                # aioquic already reset our sending half; nothing more may be written.
                stream._peer_stopped(event.error_code)
                if self.h3 is not None:
                    # Only our sending half is over (aioquic reset it); the response may still
                    # be arriving, so the stream's H3 state must stay.
                    self.h3.handle_event(event)
                self.stream_maybe_done(stream)
        elif isinstance(event, qe.ConnectionTerminated):
            self._terminated(_describe_close(event))
            if not self.finished.done():
                self.finished.set_result(None)
        elif isinstance(event, qe.ConnectionIdIssued):
            self._cid_issued(event.connection_id)
        elif isinstance(event, qe.ConnectionIdRetired):
            self._cid_retired(event.connection_id)

    def _handle_h3_event(self, event: Any) -> None:
        if isinstance(event, DataFrame):
            stream = self._streams.get(event.stream_id)
            if stream is None or stream.recv_closed:
                self.quic.credit(event.stream_id, len(event.data))
                return
            if event.data or event.frame_size is not None:
                stream._push(event)
            if event.stream_ended:
                stream._push(_ENDED)
        elif isinstance(event, HeadersReceived):
            sid = event.stream_id
            stream = self._streams.get(sid)
            if stream is None:
                if is_client(self.quic) or self._on_request is None or self._draining:
                    # A push (client) or a request this end will not serve: REQUEST_REJECTED tells
                    # the peer nothing was processed, so its client end answers 503, not 502.
                    if not is_client(self.quic):
                        self.quic.reset_stream(sid, H3_REQUEST_REJECTED)
                        if not event.stream_ended:
                            self.quic.stop_stream(sid, H3_REQUEST_REJECTED)
                        self.transmit_soon()
                    return
                stream = TunnelStream(self, sid)
                self._streams[sid] = stream
                stream._push(Headers(list(event.headers), event.stream_ended))
                if event.stream_ended:
                    stream._push(_ENDED)
                self._on_request(stream)
                return
            stream._push(Headers(list(event.headers), event.stream_ended))
            if event.stream_ended:
                stream._push(_ENDED)

    # -- connection ids (server routing) ------------------------------------------------------

    cid_issued_handler: Callable[[bytes], object] | None = None
    cid_retired_handler: Callable[[bytes], object] | None = None

    def _cid_issued(self, cid: bytes) -> None:
        if self.cid_issued_handler is not None:
            self.cid_issued_handler(cid)

    def _cid_retired(self, cid: bytes) -> None:
        if self.cid_retired_handler is not None:
            self.cid_retired_handler(cid)

    # -- streams (called by TunnelStream) -----------------------------------------------------

    def open_stream(
        self, headers: list[tuple[bytes, bytes]] | None = None, end_stream: bool = False
    ) -> TunnelStream:
        """Client: open a new request stream now (when :meth:`stream_slot_ready`, else wait in
        :meth:`acquire_stream`), sending its request ``headers`` at once when given.

        Pass the headers here rather than sending them later: aioquic creates a stream when
        something is first sent on it and takes every lower id of ours as already finished, so
        streams must make their first send in the order their ids were handed out."""
        if self.closed.done():
            raise StreamAborted(f"tunnel closed: {self.close_reason}")
        self._ensure_h3()
        # Two streams opened before either sent would get the same id from aioquic: ids are
        # handed out here.
        sid = max(self.quic.get_next_available_stream_id(), self._next_stream_id)
        self._next_stream_id = sid + 4
        stream = TunnelStream(self, sid)
        self._streams[sid] = stream
        self._opened_streams += 1
        if headers is not None:
            stream.send_headers(headers, end_stream)
        return stream

    def stream_slots_free(self) -> int:
        """Request streams the peer lets us open now that no waiting request was promised."""
        # MAX_STREAMS is cumulative (RFC 9000 4.6): compare it with every stream ever opened,
        # not with those still open, or the count runs ahead and aioquic queues the stream
        # itself (where stream_queue_timeout cannot see it).
        return peer_max_streams_bidi(self.quic) - self._opened_streams - self._slots_granted

    def stream_slot_ready(self) -> bool:
        """A request may open its stream at once: a slot is free and nobody is queued before it."""
        return not self._slot_waiters and self.stream_slots_free() > 0

    async def acquire_stream(
        self,
        headers: list[tuple[bytes, bytes]] | None = None,
        end_stream: bool = False,
        timeout: float | None = None,
    ) -> TunnelStream:
        """Open a request stream (as :meth:`open_stream`), waiting in arrival order for the peer
        to allow one more; TimeoutError after ``timeout`` seconds without one.

        The timeout is the queue's, not ``asyncio.wait_for``'s: that costs a task and a timer per
        waiting request (~30 us, a sixth of the client end's CPU per request at c1024), where
        the queue arms one timer for its earliest deadline."""
        if self.stream_slot_ready():
            return self.open_stream(headers, end_stream)
        if self.closed.done():
            raise StreamAborted(f"tunnel closed: {self.close_reason}")
        fut: asyncio.Future[None] = self._loop.create_future()
        deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        entry = (fut, deadline)
        self._slot_waiters.append(entry)
        if timeout is not None and (self._queue_timer is None or deadline < self._queue_timer_at):
            self._arm_queue_timer(deadline)
        try:
            await fut
        except BaseException:
            if fut.cancelled():  # the caller gave up while waiting: leave the queue
                with contextlib.suppress(ValueError):  # unless a grant or expiry passed it over
                    self._slot_waiters.remove(entry)
            elif fut.done() and not fut.cancelled() and fut.exception() is None:
                # Granted a slot, then gave up (cancelled) before using it: pass it on.
                self._slots_granted -= 1
                self._grant_slots()
            raise
        self._slots_granted -= 1
        # Opened and first sent in this same step: the request granted next cannot send first.
        return self.open_stream(headers, end_stream)

    def _grant_slots(self) -> None:
        """Promise free slots to the waiting requests, first come first served: as many as the
        peer's MAX_STREAMS frees at once, not one per event batch."""
        waiters = self._slot_waiters
        free = self.stream_slots_free()
        while waiters and free > 0:
            fut, _ = waiters.popleft()
            if fut.done():
                continue
            fut.set_result(None)
            self._slots_granted += 1
            free -= 1

    def _arm_queue_timer(self, deadline: float) -> None:
        if self._queue_timer is not None:
            self._queue_timer.cancel()
        self._queue_timer_at = deadline
        self._queue_timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._expire_waiters)

    def _expire_waiters(self) -> None:
        """TimeoutError for the waiting requests whose deadline passed (the order of the others
        kept); re-armed for the earliest deadline left. Fires about once per timeout while
        requests queue: the head of the queue, the oldest, usually has the earliest deadline."""
        self._queue_timer = None
        now = time.monotonic() + TIMER_SLACK
        kept: deque[tuple[asyncio.Future[None], float]] = deque()
        earliest = float("inf")
        for fut, deadline in self._slot_waiters:
            if fut.done():
                continue
            if deadline <= now:
                fut.set_exception(TimeoutError())
                continue
            kept.append((fut, deadline))
            earliest = min(earliest, deadline)
        self._slot_waiters = kept
        if earliest != float("inf"):
            self._arm_queue_timer(earliest)

    def send_headers(self, stream: TunnelStream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        assert self.h3 is not None
        try:
            self.h3.send_headers(stream.stream_id, headers, end_stream=end)
        except (RuntimeError, ValueError) as exc:
            # The peer's STOP_SENDING (or RESET_STREAM) overtook its request's HEADERS (reordered
            # or lost packets): aioquic reset or forgot the stream before we knew of it.
            raise StreamAborted(f"peer stopped the stream before it was answered ({exc})") from None
        if end:
            self.quic.release_stream(stream.stream_id)
        self._transmit_after_send(end)

    def send_data(self, stream: TunnelStream, data: bytes, end: bool) -> None:
        assert self.h3 is not None
        if data:
            self.h3.send_data(stream.stream_id, data, end_stream=end)
        elif end:
            # Finish without writing an empty DATA frame.
            self.h3.finish_stream(stream.stream_id)
        if end:
            self.quic.release_stream(stream.stream_id)
        self._transmit_after_send(end)

    def _transmit_after_send(self, end: bool) -> None:
        """A lone stream's last frame leaves now, ahead of the rest of its writer's step (the
        handler's bookkeeping, the next loop iteration); otherwise coalesce in transmit_soon."""
        if end and len(self._streams) <= 1:
            if self._transmit_handle is not None:
                self._transmit_handle.cancel()
            self.transmit()
        else:
            self.transmit_soon()

    def reset_stream(self, stream: TunnelStream, code: int) -> None:
        self._abort_half(self.quic.reset_stream, stream, code)

    def stop_stream(self, stream: TunnelStream, code: int) -> None:
        self._abort_half(self.quic.stop_stream, stream, code)

    def _abort_half(self, abort: Callable[[int, int], None], stream: TunnelStream, code: int) -> None:
        """RESET_STREAM (our sending half) or STOP_SENDING (the peer's), unless the session is gone."""
        if self.closed.done():
            return
        try:
            abort(stream.stream_id, code)
        except Exception:  # noqa: BLE001 - already reset or finished: nothing left to abort
            pass
        self.transmit_soon()

    def credit(self, stream_id: int, nbytes: int) -> None:
        self.quic.credit(stream_id, nbytes)
        # Most reads credit a few bytes: transmit only once they make a window update due.
        if self.quic.credit_due(stream_id):
            self.transmit_soon()

    def stream_maybe_done(self, stream: TunnelStream) -> None:
        """Forget a stream once both halves are over; return its credit and its slot."""
        if not (stream.send_closed and stream.recv_closed):
            return
        if self._streams.pop(stream.stream_id, None) is None:
            return
        self.quic.forget_stream(stream.stream_id)
        if self.h3 is not None:
            self.h3.forget_stream(stream.stream_id)
        # A transmit only for a frame this makes due: MAX_DATA for the leftover bytes credited,
        # or MAX_STREAMS when aioquic's discard returns a credit the peer has not had yet (the
        # server end releases a request's credit with its answer, release_stream, so nearly
        # never; a finished half marks its stream, and the pass after that discards it). This
        # transmit found nothing to send once per request at the server end (the answer left
        # with its last frame). (A client's slots come back only with the peer's MAX_STREAMS.)
        quic = self.quic
        if quic.credit_due() or quic.discard_credit_due(stream.stream_id):
            self.transmit_soon()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- send-side backpressure ---------------------------------------------------------------

    def _buffered_total(self) -> int:
        quic = self.quic
        return sum(stream_send_buffered(quic, sid) for sid in self._streams)

    async def wait_send_room(self, stream: TunnelStream) -> None:
        """Block while unacknowledged data on this connection exceeds ``send_window``."""
        while self._buffered_total() >= send_window(self.quic, self._send_window):
            if self.closed.done():
                raise StreamAborted(f"tunnel closed: {self.close_reason}")
            if stream.send_error is not None:
                raise stream.send_error
            fut = self._loop.create_future()
            self._room_waiters.append(fut)
            await fut

    def _wake_room_waiters(self) -> None:
        if self.closed.done() or self._buffered_total() < send_window(self.quic, self._send_window):
            waiters, self._room_waiters = self._room_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self, reason: str = "", error_code: int = 0x100) -> None:
        """Close the connection (H3_NO_ERROR by default)."""
        if self.closed.done():
            return
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit()

    def start_draining(self) -> None:
        """Refuse new requests from now on (server end shutting down)."""
        self._draining = True

    def send_goaway(self) -> None:
        """Server: GOAWAY with the largest stream id (RFC 9114 §5.2's graceful first step): the
        client end opens a new session for new requests and closes this one once its requests
        finished; whatever it still sends here is served. A no-op before the handshake."""
        if self.h3 is not None and not self.closed.done():
            self.h3.send_goaway(MAX_CLIENT_BIDI_STREAM_ID)
            self.transmit_soon()

    def _terminated(self, reason: str) -> None:
        if self.closed.done():
            return
        self.close_reason = reason
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        aborted = StreamAborted(f"tunnel lost: {reason}")
        for stream in list(self._streams.values()):
            stream._abort(aborted)
        for fut in self._room_waiters:
            if not fut.done():
                fut.set_result(None)
        waiting, self._slot_waiters = self._slot_waiters, deque()
        if self._queue_timer is not None:
            self._queue_timer.cancel()
            self._queue_timer = None
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(StreamAborted(f"tunnel closed: {reason}"))
        if not self.confirmed.done():
            self.confirmed.set_exception(SessionClosed(reason))
            self.confirmed.exception()  # retrieved: no "never retrieved" warning
        self.closed.set_result(reason)
        if self._on_closed is not None:
            self._on_closed(self)

    def abort(self, reason: str) -> None:
        """Drop the connection locally without telling the peer (socket gone)."""
        self._terminated(reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transmit_handle is not None:  # the socket may be gone: nothing more to send
            self._transmit_handle.cancel()
            self._transmit_handle = None
        if not self.finished.done():
            self.finished.set_result(None)

    def stats(self) -> dict[str, float]:
        data = connection_stats(self.quic)
        data["bytes_received"] = float(self.bytes_received)
        data["bytes_sent"] = float(self.bytes_sent)
        data["datagrams_received"] = float(self.datagrams_received)
        data["datagrams_sent"] = float(self.datagrams_sent)
        data["open_streams"] = float(len(self._streams))
        data["stream_slots_free"] = float(self.stream_slots_free())
        data["lost_packets"] = float(lost_packets(self.quic))
        for kind, count in packets_sent(self.quic).items():
            data[f"packets_sent_{kind}"] = float(count)
        return data


def _describe_close(event: qe.ConnectionTerminated) -> str:
    reason = event.reason_phrase or "no reason given"
    if reason == "Idle timeout":
        # aioquic files its own idle timeout under INTERNAL_ERROR; say what happened instead.
        return "idle timeout: no packet from the peer within max_idle_timeout"
    return f"{_error_name(event.error_code, event.frame_type)}: {reason}"


def _error_name(code: int, frame_type: int | None) -> str:
    """Name a QUIC/HTTP3/TLS error code for log lines (application closes carry no frame type)."""
    from aioquic.h3.connection import ErrorCode as H3Error
    from aioquic.quic.packet import QuicErrorCode
    from aioquic.tls import AlertDescription

    if frame_type is None:
        try:
            return H3Error(code).name
        except ValueError:
            return f"application error {code:#x}"
    if 0x100 <= code <= 0x1FF:
        try:
            return f"TLS alert {AlertDescription(code - 0x100).name}"
        except ValueError:
            return f"crypto error {code:#x}"
    try:
        return QuicErrorCode(code).name
    except ValueError:
        return f"transport error {code:#x}"
