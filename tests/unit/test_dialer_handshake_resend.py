"""The client end sends its handshake again soon after an ICMP port unreachable (the server end is
starting too), a bounded number of times with growing delays, then counts refusals towards giving up."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ptproxy.client import dialer
from ptproxy.client.dialer import HANDSHAKE_RESENDS, Dialer, _ClientProtocol
from ptproxy.ops.config import parse


def bare_dialer() -> Dialer:
    """A Dialer of a minimal client configuration, never started (only .config is read before
    a dial)."""
    text = f"""
[general]
mode = "Client"
peer_hostname = "server.example.com"
connect_address = {json.dumps(["127.0.0.1"])}
[tls]
ca = "ca.crt"
cert = "client.crt"
key = "client.key"
"""
    settings = SimpleNamespace(config=parse(text, path=Path("/etc/ptproxy/client.toml")))
    return Dialer(settings)  # type: ignore[arg-type]


class FakeSession:
    def __init__(self) -> None:
        self.handshake_done = False
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.resends = 0
        self.aborted: str | None = None

    def resend_handshake(self) -> None:
        self.resends += 1

    def abort(self, reason: str) -> None:
        self.aborted = reason


async def _drain(proto: _ClientProtocol) -> None:
    for _ in range(100):  # the resend is a call_later(0): a few loop iterations
        if proto._resend_handle is None:
            return
        await asyncio.sleep(0)
    raise AssertionError("resend never ran")


def test_refusals_during_the_handshake_resend_it_then_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dialer, "HANDSHAKE_RESEND_FIRST", 0.0)

    async def scenario() -> None:
        proto = _ClientProtocol()
        session = FakeSession()
        proto.session = session  # type: ignore[assignment]
        for expected in range(1, HANDSHAKE_RESENDS + 1):
            proto.error_received(ConnectionRefusedError())
            proto.error_received(ConnectionRefusedError())  # while one is pending: no second one
            await _drain(proto)
            assert session.resends == expected
        assert session.aborted is None
        for _ in range(3):  # then the usual rule: a run of refusals ends the attempt
            proto.error_received(ConnectionRefusedError())
        assert session.aborted is not None and "ICMP" in session.aborted

    asyncio.run(scenario())


def test_refusals_after_the_handshake_never_resend() -> None:
    async def scenario() -> None:
        proto = _ClientProtocol()
        session = FakeSession()
        session.handshake_done = True
        proto.session = session  # type: ignore[assignment]
        proto.error_received(ConnectionRefusedError())
        assert proto._resend_handle is None and session.resends == 0

    asyncio.run(scenario())


def test_refusals_during_the_handshake_are_reported_to_the_dialer() -> None:
    async def scenario() -> None:
        told: list[int] = []
        proto = _ClientProtocol(on_refused=lambda: told.append(1))
        session = FakeSession()
        proto.session = session  # type: ignore[assignment]
        proto.error_received(ConnectionRefusedError())
        proto.error_received(ConnectionRefusedError())
        assert len(told) == 2  # each one: the dialer's trigger shortens its gap while they come
        session.handshake_done = True
        proto.error_received(ConnectionRefusedError())
        assert len(told) == 2
        if proto._resend_handle is not None:
            proto._resend_handle.cancel()

    asyncio.run(scenario())


def test_a_request_action_due_now_can_be_moved_again_under_uvloop() -> None:
    """uvloop turns call_later(0) into call_soon, whose Handle has no when(): a refusal arriving
    while such an action was pending raised AttributeError in the socket's callback."""
    import uvloop

    async def scenario() -> None:
        dialer = bare_dialer()
        dialer._trigger.sleeping()  # between attempts: a waiting request's action is due now
        dialer._demand()
        first = dialer._demand_handle
        assert first is not None
        dialer._demand()  # again, e.g. after a refusal: the pending one stands
        assert dialer._demand_handle is first
        first.cancel()

    uvloop.run(scenario())
