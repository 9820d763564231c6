"""Received ACK frames held until the packet's events were handed over (issue 13, small exchanges
on a long link).

PatchedQuicConnection, after ``hold_acks(True)`` (a Session's, while at most one stream is open), keeps a 1-RTT packet's
ACK frames (loss recovery, congestion control) for ``flush_acks``, which everything deciding what or
when to send runs first (datagrams_to_send, get_timer, handle_timer). A Session hands a lone
stream's end to its reader as the datagram is read (Session.datagram_received; else its transmit
does) and sends (ACK frames processed first) after the reader's step, so the request reaches the
origin / the response the client before that work. Checked in both twin modes (the compiled receive
path and ACK handler, or aioquic's): the event is there while the ACK frame waits, the recovery
state afterwards is the one an at-once handling leaves, a malformed frame fails the packet the same
way, and a Session's reader runs before the ACK frames are processed and before what was scheduled
after the datagram's read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aioquic import tls
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.connection import QuicConnectionError
from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.config import Config
from ptproxy.ops.devcerts import DemoPki, make_demo_pki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.stream import Headers, StreamEnded
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair
from tests.unit.test_io_session import Pair as SessionPair
from tests.unit.test_io_session import configs  # noqa: F401 - the fixture

ONE_RTT = tls.Epoch.ONE_RTT


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return make_demo_pki(Path(tmp_path_factory.mktemp("pki")))


def _connected(pki: DemoPki, hold: bool) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    Pair.events(pair.client)
    Pair.events(pair.server)
    pair.server.hold_acks(hold)
    return pair


def _server_packet_then_client_ack_and_data(pair: Pair) -> tuple[int, int]:
    """The server sends stream data (an ack-eliciting packet in flight); the client answers with
    one datagram carrying the ACK of it and a new stream's data, which the server receives.
    Returns the stream IDs (server's, client's)."""
    server, client = pair.server, pair.client
    sid = server.get_next_available_stream_id()
    server.send_stream_data(sid, b"response", end_stream=True)
    for data, _ in server.datagrams_to_send(now=pair.now):
        client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    Pair.events(client)
    pair.now += 0.05
    cid = client.get_next_available_stream_id()
    client.send_stream_data(cid, b"request", end_stream=True)
    datagrams = client.datagrams_to_send(now=pair.now)
    assert len(datagrams) == 1  # the ACK rides with the stream data
    pair.now += 0.05
    server.receive_datagram(datagrams[0][0], CLIENT_ADDR, now=pair.now)
    return sid, cid


def _recovery(conn: PatchedQuicConnection) -> tuple[Any, ...]:
    loss = conn._loss
    space = conn._spaces[ONE_RTT]
    return (
        sorted(space.sent_packets),
        space.largest_acked_packet,
        space.ack_eliciting_in_flight,
        loss._rtt_latest,
        loss._rtt_smoothed,
        loss._rtt_variance,
        loss.bytes_in_flight,
    )


def test_the_stream_event_is_there_while_the_ack_frame_waits(pki: DemoPki) -> None:
    pair = _connected(pki, hold=True)
    server = pair.server
    in_flight = sorted(server._spaces[ONE_RTT].sent_packets)
    _, cid = _server_packet_then_client_ack_and_data(pair)
    sent = server._spaces[ONE_RTT].sent_packets
    # The request's data is an event already; the packet the ACK acknowledges is still in flight.
    events = Pair.events(server)
    assert any(type(e) is StreamDataReceived and e.stream_id == cid and e.end_stream for e in events)
    assert server.acks_held()
    assert len(sent) > len(in_flight)
    # Asking when to wake up processes it first.
    server.get_timer()
    assert not server.acks_held()
    assert not sent


@pytest.mark.parametrize("flush", ["get_timer", "datagrams_to_send", "handle_timer"])
def test_held_ack_frames_leave_the_state_an_at_once_handling_leaves(pki: DemoPki, flush: str) -> None:
    states = []
    for hold in (False, True):
        pair = _connected(pki, hold=hold)
        _server_packet_then_client_ack_and_data(pair)
        server = pair.server
        assert server.acks_held() is hold
        if flush == "get_timer":
            server.get_timer()
        elif flush == "datagrams_to_send":
            server.datagrams_to_send(now=pair.now)
        else:
            server.handle_timer(now=pair.now)
        assert not server.acks_held()
        states.append(_recovery(server))
    assert states[0] == states[1]
    assert not states[1][0]  # everything the server had sent was acknowledged


def _ack_frame(*fields: int) -> bytes:
    buf = Buffer(capacity=8 * len(fields))
    for value in fields:
        buf.push_uint_var(value)
    return buf.data


@pytest.mark.parametrize(
    "body",
    [
        _ack_frame(3, 0, 0, 5),  # first range below packet 0
        _ack_frame(9, 0, 1, 2, 5, 1),  # a later range below packet 0
        _ack_frame(9, 0, 2, 1, 0),  # fewer ranges than announced
        _ack_frame(9, 0),  # cut short
        _ack_frame(1, 0, 0, 0)[:-1],  # cut inside a field
    ],
)
@pytest.mark.parametrize("frame_type", [0x02, 0x03])
def test_a_malformed_ack_frame_fails_as_the_handler_fails(pki: DemoPki, body: bytes, frame_type: int) -> None:
    """Held or not, the frame is read where it is met: the same exception as the connection's own
    handler (compiled or aioquic's) raises, with the same code, frame type and reason, ends the
    packet's processing, and nothing is held."""
    pair = _connected(pki, hold=True)
    server = pair.server
    context = type("Ctx", (), {"epoch": ONE_RTT, "time": pair.now, "quic_logger_frames": None})()
    raised = []
    for handler in (server._ptp_ack_frame, server._ptp_ack_handler):
        with pytest.raises((QuicConnectionError, BufferReadError)) as info:
            handler(context, frame_type, Buffer(data=body))
        exc = info.value
        raised.append((type(exc), getattr(exc, "error_code", None), getattr(exc, "frame_type", None),
                       getattr(exc, "reason_phrase", None)))
    assert raised[0] == raised[1]
    assert not server.acks_held()


def test_a_well_formed_ack_frame_is_held_whole(pki: DemoPki) -> None:
    """The frame is held in place (its packet's Buffer, no copy, and its offset there), ECN counts
    included: the next frame starts after them; flushing reads it from there."""
    pair = _connected(pki, hold=True)
    server = pair.server
    context = type("Ctx", (), {"epoch": ONE_RTT, "time": pair.now})()
    frame = _ack_frame(0, 0, 0, 0, 7, 8, 9)  # ACK_ECN of packet 0, then the three counts
    buf = Buffer(data=frame + b"\x01")  # a PING follows
    server._ptp_ack_frame(context, 0x03, buf)
    assert buf.pull_uint_var() == 0x01 and buf.eof()
    assert server._ptp_held_acks == [(context, 0x03, buf, 0)]
    server.flush_acks()
    assert buf.tell() == len(frame)  # replayed from its offset by the bound handler
    assert not server.acks_held()


def test_without_hold_or_outside_1rtt_the_frame_is_handled_at_once(pki: DemoPki) -> None:
    pair = _connected(pki, hold=True)
    server = pair.server
    table = server._QuicConnection__frame_handlers
    assert table[0x02][0] == table[0x03][0] == server._ptp_ack_frame
    context = type("Ctx", (), {"epoch": tls.Epoch.HANDSHAKE, "time": pair.now, "quic_logger_frames": None})()
    server._ptp_ack_frame(context, 0x02, Buffer(data=_ack_frame(0, 0, 0, 0)))
    assert not server.acks_held()
    # Off again: the table's entries are the handler bound at construction (aioquic's or compiled).
    server.hold_acks(False)
    assert table[0x02][0] == table[0x03][0] == server._ptp_ack_handler
    fresh = _connected(pki, hold=False).server
    assert fresh._QuicConnection__frame_handlers[0x02][0] == fresh._ptp_ack_handler


async def _lone_gets(pair: SessionPair, count: int) -> None:
    """``count`` GETs from the client session, one at a time: each is sent once the previous
    response was read to its end, so the next GET goes at once and the ACK of that response rides
    with it."""
    for _ in range(count):
        stream = pair.client.open_stream()
        stream.send_headers(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"o"), (b":path", b"/")],
            end_stream=True,
        )
        head = await stream.receive()
        assert isinstance(head, Headers)
        if not head.stream_ended:
            assert isinstance(await stream.receive(), StreamEnded)
        stream.finish()


def _no_timer_due(pair: SessionPair) -> Callable[[], None]:
    """However slowly this machine runs the test, no timer of either end fires between a GET's
    read and its reader's step (a timer's handling processes the held ACK frames first): the
    client's ACK of a response leaves only with its next GET, the server's ACK of a GET only with
    its response, and neither end's probe timeout comes due (the peer's max_ack_delay is part of
    it). Returns what puts the probe timeouts back, for the close (its drain lasts 3 of them)."""
    server = pair.server
    assert server is not None
    losses = [(quic._loss, quic._loss.max_ack_delay) for quic in (pair.client.quic, server.quic)]
    for quic in (pair.client.quic, server.quic):
        quic._ack_delay = 60.0
        quic._loss.max_ack_delay = 60.0

    def restore() -> None:
        for loss, max_ack_delay in losses:
            loss.max_ack_delay = max_ack_delay

    return restore


def test_a_session_reader_runs_before_the_ack_frames_it_came_with(
    configs: tuple[Config, Config],  # noqa: F811 - the fixture
) -> None:
    """Server end, a lone GET (its HEADERS end the stream) carrying the ACK of the previous
    response: the handler's step that reads it sees the ACK frame still held and nothing sent
    since; the send one loop step later processes it (and the exchange completes)."""

    async def main() -> list[tuple[bool, int]]:
        pair = SessionPair(configs, None)
        seen: list[tuple[bool, int]] = []
        restore = None
        try:
            await pair.connect()
            restore = _no_timer_due(pair)

            async def serve(n: int) -> None:
                for _ in range(n):
                    stream = await pair.requests.get()
                    head = await stream.receive()
                    assert isinstance(head, Headers) and head.stream_ended
                    server = pair.server
                    assert server is not None
                    seen.append((server.quic.acks_held(), server.transmits))
                    stream.send_headers([(b":status", b"204")], end_stream=True)
                    stream.finish()  # the handler is done with it: the session lets it go

            server_task = asyncio.ensure_future(serve(3))
            await _lone_gets(pair, 3)
            await server_task
            server = pair.server
            assert server is not None
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not server.quic.acks_held()
            return seen
        finally:
            if restore is not None:
                restore()
            await pair.close()

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(seen) == 3
    # From the second GET on, the client's packet acknowledges the server's previous response.
    assert all(held for held, _ in seen[1:]), seen


def test_a_lone_stream_end_reaches_its_reader_at_the_next_loop_step(
    configs: tuple[Config, Config],  # noqa: F811 - the fixture
) -> None:
    """Server end, a lone GET with the ACK of the previous response: its events are handed over
    as the datagram is read, so the handler's step that reads it runs before anything scheduled
    right after that read (not one loop step later, behind a transmit scheduled by the read); the
    ACK frame is still held then, and the send follows."""

    async def main() -> list[tuple[str, int, bool]]:
        pair = SessionPair(configs, None)
        order: list[tuple[str, int, bool]] = []
        reads = [0]
        restore = None
        try:
            await pair.connect()
            restore = _no_timer_due(pair)
            server = pair.server
            assert server is not None
            loop = asyncio.get_running_loop()
            received = server.datagram_received

            def datagram_received(data: bytes, addr: Any) -> None:
                reads[0] += 1
                received(data, addr)
                loop.call_soon(order.append, ("after read", reads[0], False))

            server.datagram_received = datagram_received  # type: ignore[method-assign]

            async def serve(n: int) -> None:
                for _ in range(n):
                    stream = await pair.requests.get()
                    head = await stream.receive()
                    assert isinstance(head, Headers) and head.stream_ended
                    order.append(("reader", reads[0], server.quic.acks_held()))
                    stream.send_headers([(b":status", b"204")], end_stream=True)
                    stream.finish()

            server_task = asyncio.ensure_future(serve(3))
            await _lone_gets(pair, 3)
            await server_task
            return order
        finally:
            if restore is not None:
                restore()
            await pair.close()

    order = asyncio.run(asyncio.wait_for(main(), 30))
    readers = [entry for entry in order if entry[0] == "reader"]
    assert len(readers) == 3, order
    # From the second GET on (its datagram carries the ACK of the previous response): the reader
    # ran with the ACK frame still held, before what was scheduled right after that read.
    for entry in readers[1:]:
        assert entry[2], order
        assert order.index(entry) < order.index(("after read", entry[1], False)), order
