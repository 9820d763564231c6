"""The tunnel: one QUIC connection carrying HTTP/3 between the two ends, and what builds it.

This is the surface the client, server and ops code use; they import from ``ptproxy.tunnel``, not
from its modules. Inside: ``session`` (the I/O edge around aioquic's sans-IO connection),
``stream`` (one request stream and its state), ``endpoint`` (settings shared by both ends), ``tls``,
``udp``; ``aioquic/`` holds every touch of aioquic internals, ``cc/`` the congestion controllers.
Importing this package has no side effects beyond importing those modules.
"""

from ptproxy.tunnel.aioquic import ClientAuthPolicy, SessionTicket
from ptproxy.tunnel.endpoint import EndpointSettings, connection_numbers, key_log_file
from ptproxy.tunnel.session import Session, SessionClosed
from ptproxy.tunnel.stream import (
    H3_INTERNAL_ERROR,
    H3_MESSAGE_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_INCOMPLETE,
    H3_REQUEST_REJECTED,
    DataFrame,
    Headers,
    StreamAborted,
    StreamEnded,
    StreamEvent,
    TunnelStream,
)
from ptproxy.tunnel.tls import (
    ServerTicketStore,
    TlsMaterial,
    client_auth_policy,
    load_material,
    quic_configuration,
)
from ptproxy.tunnel.udp import BufferSizes, open_udp_socket

__all__ = [
    "H3_INTERNAL_ERROR",
    "H3_MESSAGE_ERROR",
    "H3_REQUEST_CANCELLED",
    "H3_REQUEST_INCOMPLETE",
    "H3_REQUEST_REJECTED",
    "BufferSizes",
    "ClientAuthPolicy",
    "DataFrame",
    "EndpointSettings",
    "Headers",
    "ServerTicketStore",
    "Session",
    "SessionClosed",
    "SessionTicket",
    "StreamAborted",
    "StreamEnded",
    "StreamEvent",
    "TlsMaterial",
    "TunnelStream",
    "client_auth_policy",
    "connection_numbers",
    "key_log_file",
    "load_material",
    "open_udp_socket",
    "quic_configuration",
]
