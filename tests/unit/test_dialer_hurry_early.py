"""A replay-safe request that takes a resuming session still in its handshake (a blackout's end:
the attempt's Initial went out during the blackout and backed off) sends that handshake again
with itself: the Initial and the request's 0-RTT packet in one datagram, in the request's own
send, at most once per gap however many requests come (no timing thresholds: counts, order and
what the datagrams hold)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from benchmarks.micro.reconnect import REQUEST, SERVER_ADDR, Harness, _transmit
from ptproxy.client.dialer import REQUEST_DIAL_GAP, Dialer
from tests.unit.test_dialer_handshake_resend import bare_dialer


class FakeSession:
    """A resuming session in its handshake, as the dialer sees it."""

    number = 7

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.confirmed: asyncio.Future[None] = loop.create_future()
        self.open_streams = 0
        self.resends: list[bool] = []  # with_next_send of each resend

    def resend_handshake(self, *, with_next_send: bool = False) -> None:
        self.resends.append(with_next_send)


def _dialer_in_handshake() -> tuple[Dialer, FakeSession]:
    dialer = bare_dialer()
    session = FakeSession()
    dialer._handshaking = dialer._early = session  # type: ignore[assignment]
    dialer._trigger.attempt_started(time.monotonic() - 3.0)  # its Initial backed off since
    return dialer, session


def test_a_request_on_the_resuming_session_sends_the_handshake_again_with_itself() -> None:
    async def scenario() -> None:
        dialer, session = _dialer_in_handshake()
        got = await dialer.session_for(early_ok=True, timeout=1.0)
        # Before the request is written (no loop step in between), queued for its send.
        assert got is session and session.resends == [True]
        assert dialer._demand_handle is None
        # A burst of requests in the same gap adds nothing.
        for _ in range(50):
            assert await dialer.session_for(early_ok=True, timeout=1.0) is session
        assert session.resends == [True]

    asyncio.run(scenario())


def test_while_its_request_waits_the_handshake_goes_again_once_per_gap() -> None:
    async def scenario() -> None:
        dialer, session = _dialer_in_handshake()
        started = time.monotonic()
        await dialer.session_for(early_ok=True, timeout=1.0)
        session.open_streams = 1  # the request rides 0-RTT on it: the dialer stays hurried
        await asyncio.sleep(3.5 * REQUEST_DIAL_GAP)
        elapsed = time.monotonic() - started
        # The first with the request, then the loop's own, never more than one per gap.
        assert session.resends[0] is True and len(session.resends) >= 2
        assert all(s is False for s in session.resends[1:])
        assert len(session.resends) <= 1 + elapsed / REQUEST_DIAL_GAP
        # The answer came: nothing more.
        session.open_streams = 0
        session.confirmed.set_result(None)
        dialer._early = dialer._handshaking = None
        count = len(session.resends)
        await asyncio.sleep(2 * REQUEST_DIAL_GAP)
        assert len(session.resends) <= count + 1  # at most the one already pending
        if dialer._demand_handle is not None:
            dialer._demand_handle.cancel()

    asyncio.run(scenario())


def test_a_request_within_the_gap_of_the_attempt_waits_for_the_loop() -> None:
    async def scenario() -> None:
        dialer, session = _dialer_in_handshake()
        dialer._trigger.attempt_started(time.monotonic())  # its Initial just left
        await dialer.session_for(early_ok=True, timeout=1.0)
        assert session.resends == []  # nothing now: the gap holds
        assert dialer._demand_handle is not None  # but it comes once the gap has passed
        dialer._demand_handle.cancel()

    asyncio.run(scenario())


def _packet_types(datagram: bytes) -> list[QuicPacketType]:
    """The packets coalesced in one datagram (their types), in order."""
    buf = Buffer(data=datagram)
    types = []
    while not buf.eof() and datagram[buf.tell()] != 0:  # zeros: the datagram's padding
        start = buf.tell()
        header = pull_quic_header(buf, host_cid_length=8)
        types.append(header.packet_type)
        if header.packet_type == QuicPacketType.ONE_RTT:
            break  # a short header runs to the datagram's end
        buf.seek(start + header.packet_length)
    return types


def test_the_initial_sent_again_and_the_0rtt_request_share_one_datagram(tmp_path: Path) -> None:
    """Real sessions (benchmarks/micro/reconnect.py's harness): the resumed attempt's first
    Initial is lost (the blackout); the request's resend queues it for the request's own send,
    which carries both, and the server end takes the request from that one datagram."""
    h = Harness(tmp_path)

    async def run() -> None:
        await h.reconnect(lambda phase: phase())  # the first: a full handshake, then a ticket
        ticket, h.ticket = h.ticket, None
        quic = h.cset.new_connection(session_ticket_handler=h._ticket)
        quic.set_route_mtu(1500)
        h.client = h._session(h.ccfg, quic, h.up, SERVER_ADDR)
        h.cset.quic_config.session_ticket = ticket
        try:
            h.client.connect(SERVER_ADDR)
        finally:
            h.cset.quic_config.session_ticket = None
        assert h.up.take()  # lost in the blackout
        h.client.resend_handshake(with_next_send=True)
        assert h.up.queue == []  # queued, not sent alone
        h.cstream = h.client.open_stream(REQUEST, True)
        _transmit(h.client)  # nothing left for it: the request's send carried both
        sent = h.up.take()
        assert len(sent) == 1, [len(d) for d in sent]
        types = _packet_types(sent[0])
        assert types[0] == QuicPacketType.INITIAL and QuicPacketType.ZERO_RTT in types, types
        h.up.queue = sent
        h.s_answer()
        assert h.sstream is not None  # the server end has the request from that datagram

    asyncio.run(run())


def test_a_resend_without_a_request_leaves_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def run() -> None:
        quic = h.cset.new_connection(session_ticket_handler=h._ticket)
        quic.set_route_mtu(1500)
        h.client = h._session(h.ccfg, quic, h.up, SERVER_ADDR)
        h.client.connect(SERVER_ADDR)
        h.up.take()
        h.client.resend_handshake()
        sent = h.up.take()
        assert len(sent) == 1 and _packet_types(sent[0])[0] == QuicPacketType.INITIAL

    asyncio.run(run())
