"""Every [transport] knob observed on live (in-memory) connections built exactly as the app builds
them: from a TOML config through EndpointSettings."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from ptproxy.ops.config import Config, parse
from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import (
    PatchedQuicConnection,
    handshake_confirmed,
    peer_transport_parameters,
)
from ptproxy.tunnel.endpoint import EndpointSettings
from ptproxy.tunnel.tls import client_auth_policy, load_material
from ptproxy.tunnel.udp import DEFAULT_RECEIVE_BUFFER, BufferSizes, open_udp_socket

SERVER_ADDR = ("127.0.0.2", 4433)
CLIENT_ADDR = ("127.0.0.3", 5555)


def _configs(pki: DemoPki, transport: str) -> tuple[Config, Config]:
    d = pki.ca.parent
    client = parse(
        f"""[general]
mode = "Client"
peer_hostname = "{pki.server_name}"
[tls]
ca = "{pki.ca}"
cert = "{pki.client.cert}"
key = "{pki.client.key}"
[transport]
{transport}
""",
        path=d / "client.toml",
    )
    server = parse(
        f"""[general]
mode = "Server"
peer_hostname = "{pki.client_name}"
http_connect_address = "127.0.0.1:1"
[tls]
ca = "{pki.ca}"
cert = "{pki.server.cert}"
key = "{pki.server.key}"
[transport]
{transport}
""",
        path=d / "server.toml",
    )
    return client, server


def _pair(pki: DemoPki, transport: str = "") -> tuple[PatchedQuicConnection, PatchedQuicConnection]:
    ccfg, scfg = _configs(pki, transport)
    csettings = EndpointSettings.build(ccfg, load_material(ccfg))
    smat = load_material(scfg)
    ssettings = EndpointSettings.build(scfg, smat, client_auth_policy(scfg, smat))
    client = csettings.new_connection()
    server = ssettings.new_connection(original_destination_connection_id=client.original_destination_connection_id)
    now = 100.0
    client.connect(SERVER_ADDR, now=now)
    for _ in range(20):
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT_ADDR, now=now)
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, SERVER_ADDR, now=now)
        now += 0.001
    assert handshake_confirmed(client)
    return client, server


def test_windows_and_stream_limit_reach_the_peer(pki: DemoPki) -> None:
    client, server = _pair(
        pki,
        "stream_receive_window = 123456\nreceive_window = 654321\nmax_concurrent_http_streams = 9\nmax_idle_timeout = 7000",
    )
    seen = peer_transport_parameters(client)
    assert seen["initial_max_stream_data_bidi_remote"] == 123456
    assert seen["initial_max_data"] == 654321
    assert seen["initial_max_streams_bidi"] == 9
    assert seen["max_idle_timeout"] == pytest.approx(7.0)


def test_an_unset_receive_window_starts_at_eight_initial_windows(pki: DemoPki) -> None:
    client, _ = _pair(pki, "initial_window = 50000")
    params = peer_transport_parameters(client)
    assert params["initial_max_data"] == 400000
    assert params["initial_max_stream_data_bidi_remote"] == 1000000  # the larger of 1000000 and that
    client, _ = _pair(pki, "initial_window = 625000")  # the linkbench BDP
    params = peer_transport_parameters(client)
    assert params["initial_max_data"] == params["initial_max_stream_data_bidi_remote"] == 5000000


def test_a_receive_window_set_in_the_file_is_where_it_starts(pki: DemoPki) -> None:
    client, _ = _pair(pki, "initial_window = 50000\nreceive_window = 60000\nstream_receive_window = 70000")
    params = peer_transport_parameters(client)
    assert params["initial_max_data"] == 60000
    assert params["initial_max_stream_data_bidi_remote"] == 70000


@pytest.mark.parametrize(
    ("algorithm", "cls_name"),
    [("Bbr", "Bbr"), ("Cubic", "Cubic"), ("NewReno", "NewReno"), ("None", "FixedWindow")],
)
def test_congestion_algorithm_and_initial_window_are_installed(pki: DemoPki, algorithm: str, cls_name: str) -> None:
    ccfg, _ = _configs(pki, f'congestion_algorithm = "{algorithm}"\ninitial_window = 487500')
    conn = EndpointSettings.build(ccfg, load_material(ccfg)).new_connection()
    cc = conn.congestion_controller
    assert type(cc).__name__ == cls_name
    assert cc.congestion_window == 487500


def test_initial_rtt_sets_the_first_rtt_estimate(pki: DemoPki) -> None:
    ccfg, _ = _configs(pki, "initial_rtt = 150")
    settings = EndpointSettings.build(ccfg, load_material(ccfg))
    assert settings.quic_config.initial_rtt == pytest.approx(0.150)
    conn = settings.new_connection()
    assert conn._loss._rtt_initial == pytest.approx(0.150)


def test_max_datagram_size_is_used_for_packets(pki: DemoPki) -> None:
    ccfg, _ = _configs(pki, "max_datagram_size = 1452")
    conn = EndpointSettings.build(ccfg, load_material(ccfg)).new_connection()
    conn.connect(SERVER_ADDR, now=1.0)
    sizes = {len(d) for d, _ in conn.datagrams_to_send(now=1.0)}
    assert sizes == {1452}


def test_socket_buffer_sizes_are_applied_and_clamping_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    # Linux reports twice the requested size (bookkeeping); defaults here are well below 96 KiB*2.
    with open_udp_socket("127.0.0.1", 0, BufferSizes(98304, 98304)) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 98304
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 98304
    huge = 1 << 30
    with caplog.at_level(logging.WARNING, logger="ptproxy.tunnel"):
        with open_udp_socket("127.0.0.1", 0, BufferSizes(huge, None)) as sock:
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < huge:
        assert any(str(huge) in r.getMessage() and str(granted) in r.getMessage() for r in caplog.records)




def test_an_unset_receive_buffer_is_raised_quietly(caplog: pytest.LogCaptureFixture) -> None:
    # The OS default (~208 KiB) overflows whenever the loop is ~17 ms late at 100 Mbit/s; unset,
    # DEFAULT_RECEIVE_BUFFER is asked for, and a cap by net.core.rmem_max is no warning.
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    with caplog.at_level(logging.WARNING, logger="ptproxy.tunnel"):
        with open_udp_socket("127.0.0.1", 0, BufferSizes(None, None)) as sock:
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    assert granted >= min(DEFAULT_RECEIVE_BUFFER, rmem_max)
    assert not caplog.records


def test_a_small_max_ack_delay_is_advertised(pki: DemoPki) -> None:
    # aioquic advertises 25 ms; ours is 5 ms, so the peer's probe timeout is 20 ms shorter.
    client, server = _pair(pki)
    assert client._loss.max_ack_delay == pytest.approx(0.005)
    assert server._loss.max_ack_delay == pytest.approx(0.005)
