"""Every touch of aioquic 1.7.2 internals, and nothing else touches them.

aioquic is pinned because what ptproxy needs is only reachable through private names; each one is
declared in :mod:`.internals` and checked against the installed aioquic. The modules, by concern:
``connection`` (flow control, stream limit, congestion control, connection state), ``h3`` (DATA
frame boundaries, per-stream Content-Length), ``mtls`` (server-side client certificates),
``congestion`` (Cubic's initial window), ``qlog`` (per-end trace files), ``initial`` (a server's
first look at a datagram, before any connection exists).
"""

from ptproxy.tunnel.aioquic.congestion import restart_cubic
from ptproxy.tunnel.aioquic.connection import (
    FlowSettings,
    PatchedQuicConnection,
    connection_stats,
    handshake_confirmed,
    is_client,
    lost_packets,
    peer_max_streams_bidi,
    peer_transport_parameters,
    pending_close,
    stream_send_buffered,
)
from ptproxy.tunnel.aioquic.h3 import DataFrame, PatchedH3Connection
from ptproxy.tunnel.aioquic.internals import check_internals
from ptproxy.tunnel.aioquic.mtls import ClientAuthPolicy, SessionTicket
from ptproxy.tunnel.aioquic.qlog import EndQlogWriter

__all__ = [
    "ClientAuthPolicy",
    "DataFrame",
    "EndQlogWriter",
    "FlowSettings",
    "PatchedH3Connection",
    "PatchedQuicConnection",
    "SessionTicket",
    "check_internals",
    "connection_stats",
    "handshake_confirmed",
    "is_client",
    "lost_packets",
    "peer_max_streams_bidi",
    "peer_transport_parameters",
    "pending_close",
    "restart_cubic",
    "stream_send_buffered",
]
