"""PatchedQuicConnection._write_application (ours) writes what aioquic's loop writes.

Ours visits only the marked streams and stops as soon as a next packet could hold no frame; the
reference, ``AioquicLoop``, is the way the connection built packets before: aioquic 1.7.2's own
``_write_application``, run over views of the marked streams (which test_stream_marks checks against
aioquic's walk over every stream). Both replay the random runs of test_stream_marks (writes, FINs,
resets, STOP_SENDINGs, credit, lost datagrams, timers); every datagram either end sends is decrypted
with its peer's keys, and the two runs must produce the same datagrams, byte for byte once
decrypted, in the same transmits, leaving the same pacing time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aioquic import tls
from aioquic.quic.connection import QuicConnection
from aioquic.quic.stream import QuicStream
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.aioquic.marks import MarkingStream, StreamMarks
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair, flow_settings
from tests.unit.test_stream_marks import OPS, Run, _finish, _step


class Recording(PatchedQuicConnection):
    """Records what each transmit sent: per datagram its size and its decrypted payload."""

    _test_peer: PatchedQuicConnection | None = None
    _test_log: list[Any] | None = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        first = self._packet_number
        datagrams = super().datagrams_to_send(now)
        log, peer = self._test_log, self._test_peer
        if log is not None and peer is not None:
            sent = []
            for index, (data, _addr) in enumerate(datagrams):
                if data[0] & 0x80:  # a long header (handshake): its size only
                    sent.append((len(data), None))
                    continue
                cid_length = len(peer.host_cid)
                _header, payload, number = peer._cryptos[tls.Epoch.ONE_RTT].decrypt_packet(
                    data, 1 + cid_length, first + index
                )
                sent.append((len(data), number, payload))
            log.append((now, self._is_client, sent, self._pacing_at))
        return datagrams


class AioquicLoop(Recording):
    """The reference: aioquic's _write_application over views of the marked streams (the marked
    ready streams as its queue, the marked limits streams plus the finished ones as its streams)."""

    def _write_application(self, builder: Any, network_path: Any, now: float) -> None:
        if self._streams_queue:
            self._ptp_adopt_new()
        marks = self._ptp_marks
        streams = self._streams
        queue, view, finished = _views(streams, marks)
        marked = len(marks.ready)
        self._streams, self._streams_queue = view, queue
        try:
            QuicConnection._write_application(self, builder, network_path, now)
        finally:
            served = self._streams_queue
            self._streams, self._streams_queue = streams, []
            for stream in finished:
                if stream.stream_id not in view:  # aioquic discarded it
                    streams.pop(stream.stream_id, None)  # type: ignore[arg-type]
            self._ptp_after_write(served, marked)


def _views(
    streams: dict[int, QuicStream], marks: StreamMarks
) -> tuple[list[QuicStream], dict[int, QuicStream], list[QuicStream]]:
    queue = [s for s in map(streams.get, marks.ready) if s is not None]
    finished = [s for s in queue if s.receiver.is_finished and s.sender.is_finished]
    view = {sid: s for sid, s in ((sid, streams.get(sid)) for sid in marks.limits) if s is not None}
    for stream in finished:
        view[stream.stream_id] = stream  # type: ignore[index]
    return queue, view, finished


@contextmanager
def _streams_hash_by_id() -> Iterator[None]:
    """Both loops move the streams that sent to the end of the queue in the order of a set of
    them, which for objects hashed by identity differs from run to run: hashed by stream ID, the
    two runs' sets iterate alike."""
    MarkingStream.__hash__ = lambda self: self.stream_id  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        del MarkingStream.__hash__  # type: ignore[attr-defined]


def _record(pki: DemoPki, cls: type[Recording], ops: list[tuple[str, int, int]], drops: list[bool]) -> list[Any]:
    flow = flow_settings(stream_receive_window=60_000, receive_window=150_000, max_concurrent_streams=4)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    for conn in (pair.client, pair.server):
        conn.__class__ = cls  # before any stream exists
    pair.roundtrip()  # the handshake (random connection IDs in its frames) is not compared
    for conn in (pair.client, pair.server):
        # The handshake's ECDSA signatures vary in length, and the slow start grew the window
        # by the bytes acknowledged: the same window in both runs, and nothing left in flight.
        assert conn._ptp_cc.bytes_in_flight == 0
        conn._ptp_cc.congestion_window = 30_000
    log: list[Any] = []
    client, server = pair.client, pair.server
    assert isinstance(client, Recording) and isinstance(server, Recording)
    client._test_peer, server._test_peer = server, client
    client._test_log = server._test_log = log
    run = Run(pair, drops)
    run.consume()
    for op, index, size in ops:
        _step(run, op, min(index * 4, client._local_next_stream_id_bidi), size)
    _finish(run)
    assert client._streams == {} and server._streams == {}
    return log


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, drops=st.lists(st.booleans(), min_size=1, max_size=12))
# The server's last packet takes stream 0's last byte and FIN, and the pacer ends aioquic's pass
# before the visit that would set buffer_is_empty; the client's next packet (an ACK, a FIN) must not
# bring the server's ACK forward as if stream data were waiting (_ptp_has_stream_data).
@example(
    ops=[("write", 0, 1), ("deliver", 0, 0), ("write", 0, 1), ("lossy", 0, 0), ("reply", 0, 20996)],
    drops=[True],
)
def test_ours_sends_the_datagrams_aioquics_loop_sends(
    pki: DemoPki, ops: list[tuple[str, int, int]], drops: list[bool]
) -> None:
    with _streams_hash_by_id():
        ours = _record(pki, Recording, ops, drops)
        reference = _record(pki, AioquicLoop, ops, drops)
    assert len(ours) == len(reference)
    for index, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        assert mine == theirs, f"transmit {index}"


def _get_answered(pair: Pair) -> int:
    """A GET from the client end delivered, its short answer queued at the server end (unsent):
    the stream's id."""
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"GET", end_stream=True)
    pair.roundtrip()
    pair.server.send_stream_data(sid, b"200 OK", end_stream=True)
    return sid


def test_a_small_response_is_one_iteration(pki: DemoPki) -> None:
    """A response that fits one packet starts one packet: aioquic's loop starts a second one,
    which stays empty (fails with AioquicLoop)."""
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    server = pair.server
    sid = _get_answered(pair)
    starts = []
    builder_class = type(server)._write_application

    def counting(self: PatchedQuicConnection, builder: Any, network_path: Any, now: float) -> None:
        original = builder.start_packet

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(builder, name)

            def start_packet(self, *args: Any) -> None:
                starts.append(args)
                original(*args)

        builder_class(self, Counted(), network_path, now)

    PatchedQuicConnection._write_application = counting  # type: ignore[method-assign]
    try:
        datagrams = server.datagrams_to_send(now=pair.now)
    finally:
        PatchedQuicConnection._write_application = builder_class  # type: ignore[method-assign]
    assert len(datagrams) == 1
    assert len(starts) == 1
    # ... and the stream whose data and FIN went out is known to have nothing left.
    assert server._streams[sid].sender.buffer_is_empty
    assert sid not in server._ptp_marks.ready


def _discarding_transmit(pki: DemoPki, cls: type[PatchedQuicConnection]) -> tuple[int, int, int]:
    """The server end's transmit that discards four finished streams at its stream limit: (the
    datagrams it sent, MAX_STREAMS announced before, and after it)."""
    flow = flow_settings(max_concurrent_streams=4)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    for conn in (pair.client, pair.server):
        conn.__class__ = cls
    pair.roundtrip()
    client, server = pair.client, pair.server
    sids = []
    for _ in range(4):
        sids.append(client.get_next_available_stream_id())
        client.send_stream_data(sids[-1], b"GET", end_stream=True)
    pair.roundtrip()
    for sid in sids:
        server.send_stream_data(sid, b"200", end_stream=True)
    # The responses go out and are acknowledged; the server's streams are then finished both ways.
    for data, _ in server.datagrams_to_send(now=pair.now):
        client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    pair.now += 0.01
    client.handle_timer(pair.now)  # the client's delayed ACK
    for data, _ in client.datagrams_to_send(now=pair.now):
        server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    assert all(server._streams[sid].is_finished for sid in sids)
    limit = server._local_max_streams_bidi
    before = limit.sent
    server.send_ping(1)  # a frame to send: the full pass runs (not the idle shortcut)
    datagrams = server.datagrams_to_send(now=pair.now)
    assert all(sid not in server._streams for sid in sids)
    return len(datagrams), before, limit.sent


def test_streams_discarded_in_a_pass_are_announced_in_it(pki: DemoPki) -> None:
    """Discarding streams at the limit makes a MAX_STREAMS due: the packet after the one that
    discarded them carries it, in the same transmit, as aioquic's loop does."""
    ours = _discarding_transmit(pki, Recording)
    assert ours == _discarding_transmit(pki, AioquicLoop)
    sent, before, after = ours
    assert (before, after) == (4, 8)
    assert sent == 2  # the PING, then MAX_STREAMS


def test_a_stream_sent_to_its_fin_does_not_bring_an_ack_forward(pki: DemoPki) -> None:
    """A response's last bytes and FIN fill the pass's last packet and the pacer ends the pass:
    no visit found the stream empty, so its ``buffer_is_empty`` is still False. A packet from the
    peer then waits for the ACK delay as with no stream data waiting (the ACK was brought forward
    to now, alone in a datagram, while _ptp_has_stream_data read that flag)."""
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    client, server = pair.client, pair.server
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"G", end_stream=True)
    pair.roundtrip()
    server._ptp_cc.congestion_window = 30_000
    server.send_stream_data(sid, b"x" * 22164, end_stream=True)  # the FIN fills packet 19
    server.datagrams_to_send(now=pair.now)
    sender = server._streams[sid].sender
    assert server._pacing_at is not None
    assert not sender.buffer_is_empty and not len(sender._pending) and not sender._pending_eof
    now = server._pacing_at + 0.001  # the pacer lets a packet out
    client.send_ping(1)
    for data, _ in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    space = server._spaces[tls.Epoch.ONE_RTT]
    ack_at = space.ack_at
    assert ack_at is not None and ack_at > now
    assert server.datagrams_to_send(now=now) == []
    assert space.ack_at == ack_at
    assert len(server.datagrams_to_send(now=ack_at)) == 1  # the ACK, delayed
    assert space.ack_at is None


def test_the_one_rtt_objects_kept_are_aioquics(pki: DemoPki) -> None:
    """The send path reads the 1-RTT packet space, crypto pair and CRYPTO stream from attributes
    set by _initialize rather than from aioquic's Epoch-keyed dicts: the same objects, before and
    after the handshake and a request (a key update changes the pair's contexts, not the pair)."""
    pair = Pair(pki, client_leaf=pki.client)
    for conn in (pair.client, pair.server):
        if conn._spaces:  # the server initialises on its first datagram
            assert conn._ptp_app_space is conn._spaces[tls.Epoch.ONE_RTT]
    pair.roundtrip()
    client, server = pair.client, pair.server
    _get_answered(pair)
    pair.roundtrip()
    for conn in (client, server):
        assert conn._ptp_app_space is conn._spaces[tls.Epoch.ONE_RTT]
        assert conn._ptp_app_crypto is conn._cryptos[tls.Epoch.ONE_RTT]
        assert conn._ptp_app_crypto_stream is conn._crypto_streams[tls.Epoch.ONE_RTT]
