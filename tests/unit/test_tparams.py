"""tunnel/aioquic/tparams.py: aioquic's transport-parameter writer without scratch buffers, byte for byte.

The reference is aioquic's own writer and reader (aioquic.quic.packet, untouched): the installed
writer must give its bytes for every parameter kind, and with_max_ack_delay what a read-back and
write with the new value gave.
"""

from __future__ import annotations

import os

import pytest
from aioquic.buffer import Buffer
from aioquic.quic import connection as qc
from aioquic.quic import packet
from aioquic.quic.packet import (
    QuicPreferredAddress,
    QuicTransportParameters,
    QuicVersionInformation,
)

import ptproxy.tunnel.aioquic  # noqa: F401 (installs the writer)
from ptproxy.tunnel.aioquic import tparams


def _ref_push(params: QuicTransportParameters) -> bytes:
    buf = Buffer(capacity=4096)
    packet.push_quic_transport_parameters(buf, params)
    return buf.data


def _push(params: QuicTransportParameters) -> bytes:
    buf = Buffer(capacity=4096)
    tparams.push_quic_transport_parameters(buf, params)
    return buf.data


def _ref_rewrite(data: bytes, value: int) -> bytes:
    params = packet.pull_quic_transport_parameters(Buffer(data=data))
    params.max_ack_delay = value
    return _ref_push(params)


def _samples() -> list[QuicTransportParameters]:
    full = QuicTransportParameters(
        original_destination_connection_id=os.urandom(8),
        max_idle_timeout=60000,
        stateless_reset_token=os.urandom(16),
        max_udp_payload_size=1472,
        initial_max_data=1 << 40,
        initial_max_stream_data_bidi_local=1048576,
        initial_max_stream_data_bidi_remote=0,
        initial_max_stream_data_uni=63,
        initial_max_streams_bidi=16383,
        initial_max_streams_uni=16384,
        ack_delay_exponent=3,
        max_ack_delay=25,
        disable_active_migration=True,
        preferred_address=QuicPreferredAddress(
            ipv4_address=("192.0.2.1", 4433), ipv6_address=None, connection_id=os.urandom(8),
            stateless_reset_token=os.urandom(16),
        ),
        active_connection_id_limit=8,
        initial_source_connection_id=os.urandom(8),
        retry_source_connection_id=b"",
        version_information=QuicVersionInformation(chosen_version=1, available_versions=[1, 0x6B3343CF]),
        max_datagram_frame_size=65536,
        quantum_readiness=b"Q" * 1200,
    )
    return [full, QuicTransportParameters(), QuicTransportParameters(max_ack_delay=0, disable_active_migration=False)]


def test_the_writer_is_installed_in_aioquic_connection() -> None:
    assert qc.push_quic_transport_parameters is tparams.push_quic_transport_parameters
    assert packet.push_quic_transport_parameters is not tparams.push_quic_transport_parameters


def test_the_writer_gives_aioquics_bytes() -> None:
    for params in _samples():
        assert _push(params) == _ref_push(params)
    with pytest.raises(ValueError):
        _push(QuicTransportParameters(max_idle_timeout=1 << 62))
    with pytest.raises(ValueError):
        _ref_push(QuicTransportParameters(max_idle_timeout=1 << 62))


@pytest.mark.parametrize("value", [0, 5, 25, 63, 64, 16383, 16384])
def test_with_max_ack_delay_is_a_read_back_and_write(value: int) -> None:
    for params in _samples():
        data = _ref_push(params)
        assert tparams.with_max_ack_delay(data, value) == _ref_rewrite(data, value)
    # Not the writer's output: an unknown parameter, a repeat, the order changed, no max_ack_delay.
    unknown = _ref_push(_samples()[0]) + b"\x40\x99\x01\x00"
    assert tparams.with_max_ack_delay(unknown, value) == _ref_rewrite(unknown, value)
    repeat = b"\x0b\x01\x19\x0b\x01\x07"
    assert tparams.with_max_ack_delay(repeat, value) == _ref_rewrite(repeat, value)
    swapped = b"\x0e\x01\x08\x0b\x01\x19"
    assert tparams.with_max_ack_delay(swapped, value) == _ref_rewrite(swapped, value)
    absent = b"\x0e\x01\x08"
    assert tparams.with_max_ack_delay(absent, value) == _ref_rewrite(absent, value)


def test_with_max_ack_delay_raises_as_the_read_back_on_malformed_bytes() -> None:
    for bad in (b"\x0b\x05\x19", b"\x0c\x01\x00"):
        with pytest.raises(Exception) as ours:
            tparams.with_max_ack_delay(bad, 5)
        with pytest.raises(Exception) as ref:
            _ref_rewrite(bad, 5)
        assert type(ours.value) is type(ref.value)
