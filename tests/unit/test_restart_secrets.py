"""Stateless Reset and the ticket key file, on in-memory connections (no sockets)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.events import ConnectionTerminated

from ptproxy.errors import StartupError
from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection, install_ticket_sealer, pending_close
from ptproxy.tunnel.reset import StatelessReset
from ptproxy.tunnel.ticketkeys import ROTATE_AFTER, load_ticket_keys
from ptproxy.tunnel.tls import ServerTicketStore
from tests.support.quic_pair import Pair, flow_settings


def _rebuild_server(pair: Pair, **options: Any) -> None:
    """Replace the pair's server by one built with ``options`` too (Pair does not take these hooks)."""
    pair.server = PatchedQuicConnection(
        configuration=pair.server._configuration,
        flow=flow_settings(),
        client_auth=pair.server._ptp_client_auth,
        original_destination_connection_id=pair.client.original_destination_connection_id,
        **options,
    )


def _ticket_options(store: ServerTicketStore) -> dict[str, Any]:
    """A server's session-ticket hooks, all served by ``store``."""
    return {
        "session_ticket_fetcher": store.pop,
        "session_ticket_handler": store.add,
        "ticket_sealer": lambda ctx: install_ticket_sealer(ctx, store.seal),
    }


def _reset_pair(pki: DemoPki, reset: StatelessReset) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    _rebuild_server(pair, reset_token=reset.token)  # derived reset tokens
    pair.roundtrip()
    return pair


def test_a_restarted_server_with_the_same_secret_resets_the_client(pki: DemoPki) -> None:
    secret = b"s" * 32
    pair = _reset_pair(pki, StatelessReset(secret))
    assert pending_close(pair.client) is None
    cid = pair.client._peer_cid.cid
    assert pair.client._peer_cid.stateless_reset_token == StatelessReset(secret).token(cid)
    # The server restarted: a new process, the same secret, no state.
    packet = StatelessReset(secret).packet_for(cid, 60, now=1.0)
    assert packet is not None and len(packet) < 60 and not packet[0] & 0x80
    pair.client.receive_datagram(packet, ("2.3.4.5", 4433), now=pair.now)
    events = Pair.events(pair.client)
    assert any(isinstance(e, ConnectionTerminated) and "stateless reset" in e.reason_phrase for e in events)
    assert pair.client.stateless_reset_received
    assert pair.client.datagrams_to_send(now=pair.now) == []  # nothing more is sent
    # A timer armed before the reset may still fire: nothing happens (aioquic compared the time
    # with its cleared deadline, None, and raised TypeError in the loop's callback).
    pair.client.handle_timer(now=pair.now + 0.004)
    assert pair.client.get_timer() is None


def test_a_reset_with_another_secret_is_ignored(pki: DemoPki) -> None:
    pair = _reset_pair(pki, StatelessReset(b"s" * 32))
    packet = StatelessReset(b"t" * 32).packet_for(pair.client._peer_cid.cid, 60, now=1.0)
    assert packet is not None
    pair.client.receive_datagram(packet, ("2.3.4.5", 4433), now=pair.now)
    assert pending_close(pair.client) is None
    assert not pair.client.stateless_reset_received


def test_resets_are_small_and_rate_limited() -> None:
    reset = StatelessReset(b"k" * 32, rate=1.0)
    assert reset.packet_for(b"12345678", 40, now=0.0) is None  # too small to answer
    sent = [reset.packet_for(b"12345678", 41, now=0.0) for _ in range(5)]
    assert all(p is None or 21 <= len(p) < 41 for p in sent)
    assert sum(p is not None for p in sent) == 2  # burst of 2 x rate, then nothing


def test_key_file_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = load_ticket_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_ticket_keys(path)
    assert again.reset_secret == keys.reset_secret and again.keys[0].key == keys.keys[0].key


@pytest.mark.parametrize("content", ["{not json", '{"format": "other"}', '{"format": "ptproxy-ticket-keys-1", "reset": "00", "keys": []}'])
def test_a_corrupt_key_file_names_the_field_and_path(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(StartupError) as err:
        load_ticket_keys(path)
    message = str(err.value)
    assert "tls.ticket_key_file" in message and str(path) in message and "\n" not in message


def test_rotation_keeps_the_previous_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    clock = [1000.0]
    keys = load_ticket_keys(path, clock=lambda: clock[0])
    first = keys.keys[0].key
    clock[0] += ROTATE_AFTER + 1
    rotated = load_ticket_keys(path, clock=lambda: clock[0])
    assert [k.key for k in rotated.keys][1] == first and rotated.keys[0].key != first
    assert load_ticket_keys(path, clock=lambda: clock[0]).keys[0].key == rotated.keys[0].key  # written


def test_sealed_tickets_resume_and_0rtt_after_a_restart(pki: DemoPki, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    before = ServerTicketStore(keys=load_ticket_keys(path), context=b"ca")
    pair = Pair(pki, client_leaf=pki.client)
    _rebuild_server(pair, **_ticket_options(before))
    pair.roundtrip()
    assert pair.client_tickets, "no ticket issued"
    ticket = pair.client_tickets[-1]
    assert len(before) == 0  # nothing kept in memory: the label is the ticket
    # A new process: a new store, the same file.
    after = ServerTicketStore(keys=load_ticket_keys(path), context=b"ca")
    again = Pair(pki, client_leaf=pki.client, ticket=ticket)
    _rebuild_server(again, **_ticket_options(after))
    sid = again.client.get_next_available_stream_id()
    again.client.send_stream_data(sid, b"early", end_stream=True)
    again.roundtrip()
    assert again.server.tls.session_resumed
    assert again.server.tls.early_data_accepted
    # Single use: the same label does not open twice in one process; another CA cannot open it.
    assert after.pop(ticket.ticket) is None
    other = ServerTicketStore(keys=load_ticket_keys(path), context=b"another ca")
    assert other.pop(ticket.ticket) is None
