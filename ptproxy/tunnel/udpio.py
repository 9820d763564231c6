"""Facade for the batched UDP I/O twins: selection only (as ``ptproxy.wire.chunked``).

The compiled twin ``ptproxy._speedups.udpio`` (``recvmmsg`` / ``sendmmsg``, UDP GRO / GSO) is used
unless ``PTPROXY_NO_EXTENSIONS=1``; when it is missing the pure twin ``_udpio_py`` (one ``recvfrom`` /
``sendto`` per datagram) is used, unless ``PTPROXY_REQUIRE_EXTENSIONS=1`` (ImportError).
``capabilities()`` tells what the selected twin really uses on this machine, for ``--version`` and
metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.tunnel import _udpio_py

__all__ = ["IMPLEMENTATION"]
__all__ += _udpio_py.__all__

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel._udpio_py import *  # noqa: F403

    IMPLEMENTATION: str
else:
    load_twin(_udpio_py, "udpio", globals())
