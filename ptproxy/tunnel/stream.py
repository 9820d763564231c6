"""One HTTP/3 request stream as the application sees it, on either end of the tunnel.

The session (tunnel/session.py) pushes received events in; the frontend/backend pull them out with
``await receive()``. Pulling an event is what grants flow-control credit back to the peer, so a
slow HTTP/1.1 socket on our side slows the sender down instead of growing a buffer here.

The stream is the only writer of its lifecycle: each half (send, receive) is a :class:`HalfState`
that moves once, from OPEN to CLOSED (a FIN) or RESET (aborted by either end). The session calls
the ``_peer_*`` methods when the peer aborts a half; everyone else reads the state. What a stream
needs from the connection that carries it is :class:`StreamOwner`, which the session implements
(this module does not import it).

The record itself is a twin pair (``ptproxy.tunnel.streamrec``: the pure ``_streamrec_py`` or the
compiled ``ptproxy._speedups.streamrec``, a cdef class made once per stream); the values it carries
are in ``streamtypes``. Import all of them from here.
"""

from __future__ import annotations

from ptproxy.tunnel._streamrec_py import StreamOwner
from ptproxy.tunnel.streamrec import TunnelStream
from ptproxy.tunnel.streamtypes import (
    H3_INTERNAL_ERROR,
    H3_MESSAGE_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_INCOMPLETE,
    H3_REQUEST_REJECTED,
    DataFrame,
    HalfState,
    Headers,
    StreamAborted,
    StreamEnded,
    StreamEvent,
)

__all__ = [
    "H3_INTERNAL_ERROR",
    "H3_MESSAGE_ERROR",
    "H3_REQUEST_CANCELLED",
    "H3_REQUEST_INCOMPLETE",
    "H3_REQUEST_REJECTED",
    "DataFrame",
    "HalfState",
    "Headers",
    "StreamAborted",
    "StreamEnded",
    "StreamEvent",
    "StreamOwner",
    "TunnelStream",
]
