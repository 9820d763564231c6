"""Facade over the batched UDP I/O twins (``_udpio_py``, ``_speedups.udpio``): see ``load_twin``.

The compiled twin uses ``recvmmsg`` / ``sendmmsg`` with UDP GRO / GSO, the pure one a ``recvfrom`` /
``sendto`` per datagram. ``capabilities()`` tells what the selected twin really uses on this
machine, for ``--version`` and metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin

# The pure twin is imported only when it is the one used; both export the same __all__.
load_twin("ptproxy.tunnel._udpio_py", "udpio", globals())
__all__ = ["IMPLEMENTATION", *globals()["_impl"].__all__]

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel._udpio_py import *  # noqa: F403

    IMPLEMENTATION: str
