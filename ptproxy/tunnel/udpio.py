"""Facade for the batched UDP I/O twins: selection only (as ``ptproxy.wire.chunked``).

The compiled twin ``ptproxy._speedups.udpio`` (``recvmmsg`` / ``sendmmsg``, UDP GRO / GSO) is used
unless ``PTPROXY_NO_EXTENSIONS=1``; when it is missing the pure twin ``_udpio_py`` (one ``recvfrom`` /
``sendto`` per datagram) is used, unless ``PTPROXY_REQUIRE_EXTENSIONS=1`` (ImportError).
``capabilities()`` tells what the selected twin really uses on this machine, for ``--version`` and
metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import NO_EXTENSIONS, REQUIRE_EXTENSIONS
from ptproxy.tunnel import _udpio_py as _impl

__all__ = [
    "IMPLEMENTATION",
    "MAX_SEGMENTS",
    "capabilities",
    "enable_gro",
    "recv_batch",
    "send_batch",
]

IMPLEMENTATION = "pure"
if not (TYPE_CHECKING or NO_EXTENSIONS):
    try:
        from ptproxy._speedups import udpio as _impl  # type: ignore[no-redef]

        IMPLEMENTATION = "compiled"
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise

MAX_SEGMENTS = _impl.MAX_SEGMENTS
capabilities = _impl.capabilities
enable_gro = _impl.enable_gro
recv_batch = _impl.recv_batch
send_batch = _impl.send_batch
