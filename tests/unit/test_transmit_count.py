"""How many transmits a small sequential exchange costs, and that none of the skipped ones carried
a frame (Session.stream_maybe_done asks for a transmit only when the stream's end makes one due).

The in-memory pair of test_io_session: each exchange is a GET (HEADERS + FIN) answered with
HEADERS, a 100-byte DATA frame and FIN. Counted: the transmits at each end that sent nothing.
Proved: every response arrives whole, and once the pair settles every frame went out (no data in
flight or unsent, every ACK sent, each finished stream discarded and its credit returned to the
peer, so the client end keeps opening streams past the server's initial limit)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from ptproxy.ops.config import Config
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.session import Session
from ptproxy.tunnel.stream import Headers, TunnelStream
from tests.unit.test_io_session import GET_FIELDS, Pair, configs, read_message, run

__all__ = ["configs"]  # the module-scoped fixture, shared

BODY = bytes(range(100))


def count_idle(session: Session, idle: list[int]) -> None:
    """Count the session's transmits that sent no datagram in ``idle[0]``."""
    send_due = session._send_due

    def counted() -> None:
        sent = session.datagrams_sent
        send_due()
        if session.datagrams_sent == sent:
            idle[0] += 1

    session._send_due = counted  # type: ignore[method-assign]


async def serve(pair: Pair, count: int) -> None:
    for _ in range(count):
        stream = await pair.requests.get()
        head = await stream.receive()
        assert isinstance(head, Headers) and head.stream_ended
        stream.send_headers([(b":status", b"200"), (b"content-length", b"100")])
        await stream.send_data(BODY, end_stream=True)
        stream.finish()  # as the server end's handler does: the queued FIN closes the receive half


async def settle(pair: Pair) -> None:
    """Long enough for the ACK delay and a round of ACKs (the in-memory link is instant)."""
    for _ in range(4):
        await asyncio.sleep(0.03)


def all_sent(quic: Any) -> None:
    """Nothing left to send or to be acknowledged, at one end."""
    assert quic._loss.bytes_in_flight == 0
    space = quic._ptp_app_space
    assert space.ack_at is None  # every ACK went out
    for stream in quic._streams.values():
        assert stream.sender.buffer_is_empty
    for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
        assert limit.sent == limit.value or limit.sent - limit.used >= limit.value - limit.sent
    assert quic._local_max_data.sent == quic._local_max_data.value


def exchanges(configs: tuple[Config, Config], count: int) -> tuple[Pair, list[int], list[int], int, int]:
    async def main() -> tuple[Pair, list[int], list[int], int, int]:
        pair = Pair(configs, None)
        idle_client, idle_server = [0], [0]
        try:
            await pair.connect()
            await settle(pair)
            server = pair.server
            assert server is not None
            count_idle(pair.client, idle_client)
            count_idle(server, idle_server)
            transmits = pair.client.transmits, server.transmits
            task = asyncio.ensure_future(serve(pair, count))
            for _ in range(count):
                stream: TunnelStream = pair.client.open_stream(GET_FIELDS, end_stream=True)
                fields, body = await read_message(stream)
                assert (b":status", b"200") in fields
                assert body == BODY
                stream.finish()
            await task
            client_transmits = pair.client.transmits - transmits[0]
            server_transmits = server.transmits - transmits[1]
            await settle(pair)
            all_sent(pair.client.quic)
            all_sent(server.quic)
            # Each request stream was discarded at both ends (the H3 control and QPACK streams stay).
            assert not [sid for sid in server.quic._streams if sid % 4 == 0]
            assert not [sid for sid in pair.client.quic._streams if sid % 4 == 0]
            return pair, idle_client, idle_server, client_transmits, server_transmits
        finally:
            await pair.close()

    result: tuple[Pair, list[int], list[int], int, int] = run(main())
    return result


def test_a_sequential_exchange_costs_one_transmit_per_end(configs: tuple[Config, Config]) -> None:
    count = 30
    _, idle_client, idle_server, client_transmits, server_transmits = exchanges(configs, count)
    # One transmit per exchange at each end (the request; the response, sent from inside its last
    # write) and a few empty ones in all (the handshake's stragglers), not one per exchange: the
    # server end's transmit for a stream over (stream_maybe_done, after the handler's finish())
    # found nothing once per exchange (its credit had left with the answer) and is gone. In this
    # pair the held send after a lone stream's end is overtaken by the answer, sent in the next
    # step; between real ends it waits for the origin and stays (it processes the ACK frames
    # that came with the request and arms the ACK timer).
    assert idle_server[0] <= count // 3, (idle_server, server_transmits)
    assert idle_client[0] <= count // 3, (idle_client, client_transmits)
    assert server_transmits <= count + count // 3
    assert client_transmits <= count + count // 3


def test_streams_credited_only_at_their_discard_still_return_their_credit(
    configs: tuple[Config, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the early release (release_stream) a request's credit returns only when aioquic
    discards its finished stream: MAX_STREAMS must still reach the client end, past the server's
    initial limit (max_concurrent_http_streams, 100), or the client stalls waiting for a slot."""
    monkeypatch.setattr(PatchedQuicConnection, "release_stream", lambda self, stream_id: None)
    count = configs[1].transport.max_concurrent_http_streams + 20
    pair, *_ = exchanges(configs, count)
    assert pair.server is not None
    assert pair.server.quic._local_max_streams_bidi.sent >= count


def test_discard_credit_due_only_for_a_finished_peer_stream_not_released_early(
    configs: tuple[Config, Config],
) -> None:
    async def main() -> tuple[bool, bool, bool, bool, bool]:
        pair = Pair(configs, None)
        try:
            await pair.connect()
            server = pair.server
            assert server is not None
            stream = pair.client.open_stream(GET_FIELDS, end_stream=True)
            sid = stream.stream_id
            request = await pair.requests.get()
            await request.receive()
            quic = server.quic
            unfinished = quic.discard_credit_due(sid)  # the answer not even written
            ours = pair.client.quic.discard_credit_due(sid)  # the client end's own stream
            request.send_headers([(b":status", b"204")], end_stream=True)  # released early
            await read_message(stream)
            # A finished stream that no pass discarded yet: made so (the pass after the ACK
            # that finishes it discards it at once in this pair).
            real = quic._streams.get(sid)
            done = SimpleNamespace(is_finished=True)
            quic._streams[sid] = SimpleNamespace(sender=done, receiver=done)
            try:
                released = quic.discard_credit_due(sid)
                quic._ptp_early_credit.discard(sid)  # as if it had not been released early
                not_released = quic.discard_credit_due(sid)
            finally:
                if real is None:
                    del quic._streams[sid]
                else:
                    quic._streams[sid] = real
            gone = quic.discard_credit_due(sid + 400)
            return unfinished, ours, released, not_released, gone
        finally:
            await pair.close()

    unfinished, ours, released, not_released, gone = run(main())
    assert (unfinished, ours, released, not_released, gone) == (False, False, False, True, False)
