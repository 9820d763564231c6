"""aioquic's ``EPOCHS(shortcut)`` made once per shortcut instead of once per use.

``QuicConnection.__init__`` builds its frame-handler table with 33 calls of ``EPOCHS("IH01")``-like
shortcuts, each a new frozenset from a generator over the shortcut's letters: a server end builds
it for each new connection, i.e. on the path of its answer to a (resumed) ClientHello, and a client
for each connect. The sets are immutable and equal for a given shortcut, so one made per shortcut
is returned each time. :func:`install` binds it into ``aioquic.quic.connection`` (looked up at each
call). Same values, checked against aioquic's function in tests/unit/test_epochs.py. Installed for
both twin modes: it is plain Python.
"""

from __future__ import annotations

from aioquic import tls
from aioquic.quic import connection as qc

__all__ = ["EPOCHS", "install"]

_AIOQUIC_EPOCHS = qc.EPOCHS
_MADE: dict[str, frozenset[tls.Epoch]] = {}


def EPOCHS(shortcut: str) -> frozenset[tls.Epoch]:
    """aioquic's ``EPOCHS``: the epochs of a shortcut's letters (I, 0, H, 1), one set per shortcut."""
    found = _MADE.get(shortcut)
    if found is None:
        found = _MADE[shortcut] = _AIOQUIC_EPOCHS(shortcut)
    return found


def install() -> None:
    """Bind :func:`EPOCHS` into ``aioquic.quic.connection`` in place of aioquic's."""
    qc.EPOCHS = EPOCHS
