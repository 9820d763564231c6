"""The tunnel: one QUIC connection carrying HTTP/3 between the two ends, and what builds it.

This is the surface the client, server and ops code use; they import from ``ptproxy.tunnel``, not
from its modules. Inside: ``session`` (the I/O edge around aioquic's sans-IO connection),
``stream`` (one request stream and its state), ``endpoint`` (settings shared by both ends), ``tls``,
``ticketkeys`` and ``reset`` (secrets that survive a restart), ``udp`` and ``datagrams`` (the socket, read and written in batches); ``aioquic/`` holds every touch of aioquic internals, ``cc/`` the congestion controllers.
Importing this package has one side effect beyond importing those modules: ``deferred`` puts
stand-ins for aioquic's certificate-check dependencies (``service_identity``, pyOpenSSL) in
``sys.modules``, imported for real only if used (``aioquic/certcheck.py`` replaces their user).
"""

# First: importing ``deferred`` installs its stand-in, before anything below imports aioquic.
from ptproxy.tunnel import deferred  # noqa: I001
from ptproxy.tunnel import datagrams, endpoint, identity, reset, session, stream, tls, udp
from ptproxy.tunnel.aioquic import PACKET_KINDS, ClientAuthPolicy, SessionTicket, host_cids
from ptproxy.tunnel.datagrams import *  # noqa: F403
from ptproxy.tunnel.deferred import *  # noqa: F403
from ptproxy.tunnel.endpoint import *  # noqa: F403
from ptproxy.tunnel.identity import *  # noqa: F403
from ptproxy.tunnel.reset import *  # noqa: F403
from ptproxy.tunnel.session import *  # noqa: F403
from ptproxy.tunnel.stream import *  # noqa: F403
from ptproxy.tunnel.tls import *  # noqa: F403
from ptproxy.tunnel.udp import *  # noqa: F403

# The surface is each module's own ``__all__`` (a name is declared once, where it is defined), plus
# the two aioquic-layer types the ends hand to a session, the server's routing helper and the kinds
# of packets a session counts.
__all__ = [
    "PACKET_KINDS",
    "ClientAuthPolicy",
    "SessionTicket",
    "host_cids",
    *datagrams.__all__,
    *deferred.__all__,
    *endpoint.__all__,
    *identity.__all__,
    *reset.__all__,
    *session.__all__,
    *stream.__all__,
    *tls.__all__,
    *udp.__all__,
]
