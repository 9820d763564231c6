"""Every touch of aioquic 1.7.2 internals, and nothing else touches them.

aioquic is pinned because what ptproxy needs is only reachable through private names; each one is
declared in :mod:`.internals` and checked against the installed aioquic. The modules, by concern:
``connection`` (flow control, stream limit, congestion control, connection state), ``h3`` (DATA
frame boundaries, per-stream Content-Length), ``mtls`` (server-side client certificates),
``congestion`` (Cubic's initial window), ``qlog`` (per-end trace files), ``tickets`` (session tickets sealed into their label), ``marks`` (which streams a packet visits), ``quicpath`` (the compiled per-packet twins installed into aioquic), ``streamframes`` (STREAM frames written and read in C), ``ackpath`` (ACK frames received in C), ``h3path`` (HTTP/3 request streams read and written in C), ``initial`` (a server's
first look at a datagram, before any connection exists), ``certcheck`` (the peer certificate check, in place of aioquic's), ``tlsblocks`` (the TLS messages' length-prefixed blocks without generators), ``keyderive`` (HKDF with one HMAC key set-up per secret), ``tparams`` (transport parameters written without a scratch buffer per parameter), ``epochs`` (aioquic's epoch sets made once).
"""

from ptproxy.tunnel.aioquic import (
    ackpath,
    certcheck,
    congestion,
    connection,
    epochs,
    h3,
    h3path,
    keyderive,
    mtls,
    qlog,
    quicpath,
    streamframes,
    tickets,
    tlsblocks,
    tparams,
)
from ptproxy.tunnel.aioquic.congestion import *  # noqa: F403
from ptproxy.tunnel.aioquic.connection import *  # noqa: F403
from ptproxy.tunnel.aioquic.h3 import *  # noqa: F403
from ptproxy.tunnel.aioquic.mtls import *  # noqa: F403
from ptproxy.tunnel.aioquic.qlog import *  # noqa: F403
from ptproxy.tunnel.aioquic.tickets import *  # noqa: F403

# The compiled per-packet twins go in before any connection exists (nothing with PTPROXY_NO_EXTENSIONS=1).
quicpath.install_compiled_twins()
streamframes.install()  # the compiled STREAM frame methods, onto PatchedQuicConnection
ackpath.install()  # the compiled ACK frame handler, onto PatchedQuicConnection
h3path.install()  # the compiled request-stream methods, onto PatchedH3Connection
certcheck.install()  # our certificate check in place of aioquic's (no service_identity, no pyOpenSSL)
tlsblocks.install()  # the TLS blocks as classes (both twin modes: plain Python)
keyderive.install()  # HKDF through hashlib, one HMAC key set-up per secret (both twin modes)
tparams.install()  # the transport-parameter writer (both twin modes: plain Python)
epochs.install()  # aioquic's epoch sets made once per shortcut (both twin modes: plain Python)

# The surface is each concern's own ``__all__`` (a name is declared once, where it is defined);
# ``initial`` is the server listener's alone, and ``internals`` (the declared internals and their
# check, ~8M instructions to import) is imported by its test only, not at every start of an end.
__all__ = [
    *congestion.__all__,
    *connection.__all__,
    *h3.__all__,
    *mtls.__all__,
    *qlog.__all__,
    *tickets.__all__,
]
