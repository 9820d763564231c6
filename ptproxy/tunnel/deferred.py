"""Dependencies of aioquic that serving does not need until the first certificate is checked.

``aioquic.tls`` imports ``service_identity`` at its top (hostname checks; it pulls in ``attrs``,
``idna`` and pyOpenSSL's ``SSL`` module, about a tenth of a server end's start-up), but only
``verify_certificate`` uses it, during a handshake. :func:`defer` puts a stand-in module in its
place before aioquic is imported; the real module is imported on the stand-in's first attribute
lookup, and :func:`warm_deferred_imports` makes that lookup in a background thread (a server end:
once its endpoint is up; a client end: as soon as its first Initial is sent, so the import runs
while the server's answer is on the way), so no handshake waits for it.

The standard library's ``importlib.util.LazyLoader`` cannot do this on Python 3.11: an ``import``
statement reads ``__spec__`` from the module it finds, and any read loads a lazy module.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
import types
from typing import Any

__all__ = ["warm_deferred_imports"]

logger = logging.getLogger("ptproxy.tunnel")

DEFERRED = ("service_identity",)
# Put off until used, never warmed: aioquic.tls reads ``certifi`` only to verify without a CA of
# our own, and ptproxy always passes one (``[tls] ca``). ~4.5 ms of imports (importlib.resources)
# at each end's start-up otherwise.
ON_USE = ("certifi",)

# One import at a time: the background warm-up and a handshake's first lookup may race.
_lock = threading.Lock()
_warming = False  # the warm-up thread was started


class _StandIn(types.ModuleType):
    """Carries the real module's spec; any other attribute imports the real module first."""

    def __getattr__(self, attr: str) -> Any:
        real = _load(self.__name__)
        return getattr(real, attr)


def _load(name: str) -> types.ModuleType:
    with _lock:
        return _load_locked(name)


def _load_locked(name: str) -> types.ModuleType:
    stand_in = sys.modules.get(name)
    if isinstance(stand_in, _StandIn):
        del sys.modules[name]  # so the import below runs the real module
    real = importlib.import_module(name)
    if isinstance(stand_in, _StandIn):
        # Modules that did ``import name`` hold the stand-in: give it the real module's contents.
        stand_in.__dict__.update(real.__dict__)
    return real


def defer() -> None:
    """Install the stand-ins (once; a module already imported is left as it is)."""
    for name in DEFERRED + ON_USE:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue  # aioquic's own import reports it
        stand_in = _StandIn(name)
        stand_in.__spec__ = spec
        sys.modules[name] = stand_in


def warm() -> None:
    """Import the deferred modules now (nothing when they already are)."""
    for name in DEFERRED:
        if isinstance(sys.modules.get(name), _StandIn):
            _load(name)


def warm_deferred_imports() -> None:
    """:func:`warm` in a daemon thread: the imports run while the loop waits on the network (the
    first handshake's round trip), interleaved with it by the GIL rather than ahead of it. One
    thread per process: later calls (a client end calls this at every dial) do nothing."""
    global _warming
    if _warming or not any(isinstance(sys.modules.get(name), _StandIn) for name in DEFERRED):
        return
    _warming = True
    threading.Thread(target=_warm_logged, name="ptproxy-warm-imports", daemon=True).start()


def _warm_logged() -> None:
    try:
        warm()
    except Exception:  # the handshake's own import raises it again, in context
        logger.debug("importing %s in the background failed", ", ".join(DEFERRED), exc_info=True)


# On import: ptproxy.tunnel imports this module before any of its modules imports aioquic.
defer()
