"""A resumed 0-RTT reconnect (a blackout's end): what each end does before the response gets through.

Both ends are real Sessions from EndpointSettings joined in memory (benchmarks/micro/reconnect.py's
harness, each phase run as one loop iteration of the real end). No timing assertions: the order of
what happens, what is sent, and what is made.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.packet import QuicProtocolVersion

from benchmarks.micro.reconnect import SERVER_ADDR, Harness
from ptproxy.tunnel.aioquic import connection as pconn
from ptproxy.tunnel.cc import ccpath


def _reconnects(tmp_path: Path, count: int, phase_hook: Any = None) -> Harness:
    """A harness after ``count`` reconnects (the first a full handshake, then resumed ones)."""
    h = Harness(tmp_path)

    async def run() -> None:
        for _ in range(count):
            await h.reconnect(phase_hook or (lambda phase: phase()))

    asyncio.run(run())
    return h


def test_every_reconnect_resumes_with_0rtt(tmp_path: Path) -> None:
    h = _reconnects(tmp_path, 4)
    assert h.resumed == [False, True, True, True]


def test_server_end_answers_the_handshake_before_it_handles_the_0rtt_request(
    tmp_path: Path,
) -> None:
    seen: list[tuple[float, float]] = []
    h: Harness | None = None

    def hook(phase: Any) -> None:
        phase()
        if phase.__name__ == "s_answer" and h is not None and h.sstream is not None:
            seen.append((h.down.first_at, h.request_at))

    h = Harness(tmp_path)

    async def run() -> None:
        assert h is not None
        for _ in range(3):
            await h.reconnect(hook)

    asyncio.run(run())
    assert len(seen) == 2  # the two resumed reconnects (the first one's request waits for 1-RTT)
    for answer_sent, request_handed in seen:
        assert answer_sent < request_handed


def test_nothing_goes_alone_between_the_answer_and_the_response(tmp_path: Path) -> None:
    """The events handled after the answer leave the QPACK decoder's acknowledgement due: it rides
    with the response instead of a datagram of its own that the client end reads in between."""
    sent: list[list[int]] = []
    h = Harness(tmp_path)

    async def run() -> None:
        for _ in range(3):
            await h.reconnect(lambda phase: phase())
        # One more by hand: answer, then a loop iteration (the origin's task), then the response.
        h.sstream = None
        h.c_send()
        h.s_answer()
        sent.append([len(d) for d in h.down.take()])
        for _ in range(3):
            await asyncio.sleep(0)
        sent.append([len(d) for d in h.down.take()])
        h.s_resp()
        sent.append([len(d) for d in h.down.take()])

    asyncio.run(run())
    answer, between, response = sent
    assert answer and response
    assert between == []


def _loop_driven_answer(h: Harness) -> dict[str, int]:
    """One more resumed reconnect whose client end is driven as its event loop would drive it: the
    handshake answer read in one poll (its transmit scheduled), the response read in the next, a
    reader waiting on the request stream. What the client end had sent when the reader got the
    response head, and when everything settled."""
    seen: dict[str, int] = {}

    async def run() -> None:
        h.sstream = None
        h.c_send()
        h.s_answer()
        answer = h.down.take()
        h.s_resp()
        response = h.down.take()
        h.up.take()
        stream = h.cstream

        async def reader() -> None:
            await stream.receive()  # the response head
            seen["sent_when_delivered"] = len(h.up.queue)

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0)  # the reader waits on the stream
        for data in answer:  # one poll: the handshake answer
            h.client.datagram_received(data, SERVER_ADDR)
        await asyncio.sleep(0)  # the loop step that runs the transmit it scheduled
        for data in response:  # the next poll: the 0.5-RTT response, there meanwhile
            h.client.datagram_received(data, SERVER_ADDR)
        for _ in range(4):
            await asyncio.sleep(0)
        await task
        seen["sent_after"] = len(h.up.queue)
        seen["handshake_done"] = int(h.client.handshake_done)

    asyncio.run(run())
    return seen


def test_client_end_delivers_the_05rtt_response_before_it_sends_its_finished(
    tmp_path: Path,
) -> None:
    """At a blackout's end the response arrives right behind the handshake answer: the client end
    hands it to the waiting reader before it sends its Finished and ACKs (which then still leave)."""
    seen = _loop_driven_answer(_reconnects(tmp_path, 2))
    assert seen["sent_when_delivered"] == 0
    assert seen["sent_after"] >= 1
    assert seen["handshake_done"] == 1


def test_client_end_sends_its_finished_at_once_when_nothing_follows_the_answer(
    tmp_path: Path,
) -> None:
    """Without a response behind the answer, the held send waits one loop step, no more."""
    h = _reconnects(tmp_path, 2)
    sent: list[int] = []

    async def run() -> None:
        h.sstream = None
        h.c_send()
        h.s_answer()
        answer = h.down.take()
        h.up.take()
        for data in answer:
            h.client.datagram_received(data, SERVER_ADDR)
        await asyncio.sleep(0)  # the transmit: the events handed over, the send held
        sent.append(len(h.up.queue))
        await asyncio.sleep(0)  # nothing new came in: it sends
        sent.append(len(h.up.queue))

    asyncio.run(run())
    assert sent[0] == 0 and sent[1] >= 1


def test_client_end_offers_x25519_then_p256_and_the_server_end_takes_x25519(tmp_path: Path) -> None:
    h = _reconnects(tmp_path, 2)
    ctx = h.client.quic.tls
    assert ctx._supported_groups == [tls.Group.X25519, tls.Group.SECP256R1]
    assert len(ctx._ec_private_keys) == 1 and ctx._x25519_private_key is not None
    assert ctx._x448_private_key is None
    assert list(pconn.CLIENT_KEY_SHARE_GROUPS) == [tls.Group.X25519, tls.Group.SECP256R1]
    server = h.server.quic.tls
    assert server._x25519_private_key is not None and not server._ec_private_keys
    assert h.client.session_resumed and h.client.early_data_accepted


def test_a_server_end_without_x25519_takes_the_p256_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aioquic has no HelloRetryRequest: the second share is what a server lacking X25519 uses."""
    original = pconn.PatchedQuicConnection._initialize

    def without_x25519(self: Any, peer_cid: bytes) -> None:
        original(self, peer_cid)
        if not self._is_client:
            self.tls._supported_groups = [tls.Group.SECP256R1, tls.Group.SECP384R1]

    monkeypatch.setattr(pconn.PatchedQuicConnection, "_initialize", without_x25519)
    h = _reconnects(tmp_path, 2)
    server = h.server.quic.tls
    assert len(server._ec_private_keys) == 1 and server._x25519_private_key is None
    assert h.client.session_resumed and h.client.early_data_accepted


def test_client_end_issues_its_connection_ids_once_the_handshake_is_confirmed(
    tmp_path: Path,
) -> None:
    counts: dict[str, int] = {}
    h = Harness(tmp_path)

    def hook(phase: Any) -> None:
        phase()
        if phase.__name__ == "c_answer":
            quic = h.client.quic
            # Handshake complete (Finished sent), not yet confirmed: only the handshake's own ID.
            counts["after_answer"] = len(quic._host_cids)
            counts["confirmed_then"] = int(quic._handshake_confirmed)

    async def run() -> None:
        for _ in range(2):
            await h.reconnect(hook)

    asyncio.run(run())
    assert counts == {"after_answer": 1, "confirmed_then": 0}
    # settle() delivered the server's HANDSHAKE_DONE: the IDs were issued then.
    quic = h.client.quic
    assert quic._handshake_confirmed
    assert len(quic._host_cids) == 8
    assert all(cid.was_sent for cid in quic._host_cids)


def test_only_quic_version_1_is_set_up(tmp_path: Path) -> None:
    h = _reconnects(tmp_path, 2)
    for settings in (h.cset, h.sset):
        assert settings.quic_config.supported_versions == [QuicProtocolVersion.VERSION_1]
    assert list(h.server.quic._cryptos_initial) == [QuicProtocolVersion.VERSION_1]


def test_bbr_seeds_no_generator_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> random.Random:
        raise AssertionError("a random.Random per connection")

    monkeypatch.setattr(random, "Random", boom)
    controllers = [ccpath.Bbr(max_datagram_size=1200, initial_window=12000) for _ in range(3)]
    assert len(controllers) == 3
