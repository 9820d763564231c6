"""aioquic's transport-parameter writer without a 64 KiB scratch buffer per parameter.

aioquic's ``push_quic_transport_parameters`` walks its 20-entry ``PARAMS`` table with a fresh
``Buffer(capacity=65536)`` for each parameter present; a connection writes its parameters in
``_initialize``, i.e. on the path of the server end's answer to a (resumed) ClientHello and of the
client's connect, and ptproxy's ``PatchedQuicConnection._serialize_transport_parameters`` wrote
them twice (aioquic's bytes read back and written again with its max_ack_delay): 0.29M of the server
end's ~6.5M instructions before its answer (benchmarks/micro/reconnect.py, callgrind). Here a
parameter's value is encoded straight to bytes, and :func:`with_max_ack_delay` rewrites one
parameter of written bytes in place of the read-back.

Same bytes, checked against aioquic's own functions in tests/unit/test_tparams.py. :func:`install`
binds the writer into ``aioquic.quic.connection`` (its ``_serialize_transport_parameters`` looks
the name up at each call). Installed for both twin modes: it is plain Python.
"""

from __future__ import annotations

from aioquic.buffer import Buffer, encode_uint_var
from aioquic.quic import connection as qc
from aioquic.quic import packet
from aioquic.quic.packet import (
    PARAMS,
    QuicPreferredAddress,
    QuicTransportParameters,
    QuicVersionInformation,
    pull_quic_transport_parameters,
)

__all__ = ["install", "push_quic_transport_parameters", "with_max_ack_delay"]

_MAX_ACK_DELAY_ID = 0x0B
_AIOQUIC_PUSH = packet.push_quic_transport_parameters


def push_quic_transport_parameters(buf: Buffer, params: QuicTransportParameters) -> None:
    """aioquic's ``push_quic_transport_parameters``, the same bytes."""
    for param_id, (param_name, param_type) in PARAMS.items():
        value = getattr(params, param_name)
        if value is None or value is False:
            continue
        data: bytes
        if param_type is int:
            data = encode_uint_var(value)
        elif param_type is bytes:
            data = value
        elif param_type is QuicPreferredAddress or param_type is QuicVersionInformation:
            inner = Buffer(capacity=65536)
            if param_type is QuicPreferredAddress:
                packet.push_quic_preferred_address(inner, value)
            else:
                packet.push_quic_version_information(inner, value)
            data = inner.data
        else:
            data = b""  # a flag (disable_active_migration): present, empty
        buf.push_uint_var(param_id)
        buf.push_uint_var(len(data))
        buf.push_bytes(data)


def with_max_ack_delay(data: bytes, max_ack_delay: int) -> bytes:
    """Transport parameters as written by :func:`push_quic_transport_parameters` (minimal
    integer encodings, ``PARAMS`` order), with max_ack_delay set to ``max_ack_delay``: what reading
    them and writing them again with that value gives (the others' bytes unchanged). Anything else
    is read and written again, as before."""
    buf = Buffer(data=data)
    out = Buffer(capacity=len(data) + 16)
    found = False
    last = -1
    try:
        while not buf.eof():
            param_id = buf.pull_uint_var()
            body = buf.pull_bytes(buf.pull_uint_var())
            if param_id <= last or param_id not in PARAMS:
                # Not the writer's order (PARAMS' ids ascend), a repeat or an unknown parameter
                # (dropped when read back): take the long way.
                found = False
                break
            last = param_id
            if param_id == _MAX_ACK_DELAY_ID:
                body = encode_uint_var(max_ack_delay)
                found = True
            out.push_uint_var(param_id)
            out.push_uint_var(len(body))
            out.push_bytes(body)
    except Exception:  # noqa: BLE001 - malformed: let the long way raise what it raises
        found = False
    if found:
        return out.data
    params = pull_quic_transport_parameters(Buffer(data=data))
    params.max_ack_delay = max_ack_delay
    again = Buffer(capacity=len(data) + 16)
    push_quic_transport_parameters(again, params)
    return again.data


def install() -> None:
    """Bind the writer into ``aioquic.quic.connection`` in place of aioquic's."""
    qc.push_quic_transport_parameters = push_quic_transport_parameters
