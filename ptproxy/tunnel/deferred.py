"""Dependencies of aioquic that serving does not need, kept out of start-up.

``aioquic.tls`` imports, at its top, ``service_identity`` (hostname checks; it pulls in ``attrs``
and ``idna``) and pyOpenSSL (chain checks; ``OpenSSL`` imports its ``SSL`` and ``crypto``
modules), ~92M instructions on top of what an end imports anyway (75M + 17M, a tenth of a client
end's start-up to serving); only its
``verify_certificate`` uses them, and ptproxy replaces that function
(``tunnel/aioquic/certcheck.py``: its own name check, cryptography's chain verifier, pyOpenSSL only
when that verifier refuses). :func:`defer` puts stand-in modules in their place before aioquic is
imported; a real module is imported on its stand-in's first attribute lookup (never, in a normal
run, for ``service_identity``; for pyOpenSSL at the first refused certificate).

Nothing is imported ahead of use (before, ``service_identity`` was imported in a background thread
during the first handshake: on a short link that thread's CPU was on the handshake's critical path).

The standard library's ``importlib.util.LazyLoader`` cannot do this on Python 3.11: an ``import``
statement reads ``__spec__`` from the module it finds, and any read loads a lazy module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

from ptproxy.lazyre import import_compiling_lazily

__all__: list[str] = []


# Put off until used. ``service_identity``: only aioquic's own verify_certificate uses it, which
# certcheck.py replaces. ``certifi``: only a check without ``[tls] ca`` (the system
# roots) reads it; ~4.5 ms of imports (importlib.resources) at each end's start-up otherwise.
# ``OpenSSL``: the chain check when cryptography's verifier refuses (certcheck.py); aioquic.tls
# does ``from OpenSSL import crypto``, so the package's stand-in holds the submodule's.
ON_USE = ("service_identity", "certifi", "OpenSSL", "OpenSSL.crypto")

# One import at a time (two threads' first lookups may race); a package's import runs its
# submodules' (``OpenSSL`` imports ``OpenSSL.crypto``), hence re-entrant.
_lock = threading.RLock()


class _StandIn(types.ModuleType):
    """Carries the real module's spec; any other attribute imports the real module first."""

    def __getattr__(self, attr: str) -> Any:
        real = _load(self.__name__)
        return getattr(real, attr)


def _load(name: str) -> types.ModuleType:
    with _lock:
        return _load_locked(name)


def _load_locked(name: str) -> types.ModuleType:
    # The stand-ins of the package and of its submodules go together: the real package's import
    # imports its submodules for real (``OpenSSL`` imports ``OpenSSL.crypto``), and a submodule's
    # import needs the real package.
    package = name.partition(".")[0]
    stand_ins = {
        key: module for key, module in list(sys.modules.items())
        if isinstance(module, _StandIn) and (key == package or key.startswith(package + "."))
    }
    for key in stand_ins:
        del sys.modules[key]  # so the imports below run the real modules
    try:
        real = importlib.import_module(name)
        for key in stand_ins:
            importlib.import_module(key)
    except BaseException:
        for key, stand_in in stand_ins.items():
            sys.modules.setdefault(key, stand_in)  # as it was (the import's own error propagates)
        raise
    # Modules that did ``import name`` (or ``from package import name``) hold the stand-ins: give
    # them the real modules' contents.
    for key, stand_in in stand_ins.items():
        stand_in.__dict__.update(sys.modules[key].__dict__)
    return real


def defer() -> None:
    """Install the stand-ins (once; a module already imported is left as it is)."""
    for name in ON_USE:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        if parent and not isinstance(sys.modules.get(parent), _StandIn):
            continue  # the package is imported (or missing): so is, or will be, the submodule
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        if spec is None:
            continue  # aioquic's own import reports it
        stand_in = _StandIn(name)
        stand_in.__spec__ = spec
        if spec.submodule_search_locations is not None:
            stand_in.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = stand_in
        if parent:
            # ``from package import child`` finds it without loading the package.
            setattr(sys.modules[parent], child, stand_in)


# cryptography.x509 (aioquic.tls imports it) compiles, in x509.name, the RFC 4514 parser's
# attribute-value expression, whose ranges up to U+10FFFF the regular expression compiler expands
# code point by code point: 88M instructions (~12 ms) at each end's start-up, for a parser
# (x509.Name.from_rfc4514_string) ptproxy never calls. Compiled at its first use instead.
LAZY_PATTERN_MODULE = "cryptography.x509.name"


def _astral(pattern: Any) -> bool:
    return type(pattern) is str and bool(pattern) and max(pattern) > "\uffff"


# cryptography.x509.general_name does ``from email.utils import parseaddr`` for RFC822Name's
# validation of a value given as text (a certificate being built); a certificate parsed from its
# bytes never calls it. email.utils (with email._parseaddr, email.charset, calendar, random...) is
# ~2.8 ms of -X importtime on each end's path to its first Initial / its endpoint, and nothing
# else an end imports to serve needs it (the head mapping twins format dates without it).
EMAIL_UTILS = "email.utils"


def _parseaddr(*args: Any, **kwargs: Any) -> Any:
    """email.utils.parseaddr, email.utils imported at the first call."""
    from email.utils import parseaddr

    return parseaddr(*args, **kwargs)


def import_x509() -> None:
    """Import cryptography.x509 (once), with x509.name's expressions reaching past U+FFFF compiled
    on use (a cryptography that changed its expressions simply compiles them as before), and
    general_name's ``parseaddr`` importing email.utils at its first call."""
    if LAZY_PATTERN_MODULE in sys.modules:
        return
    # A stand-in holding only parseaddr, in sys.modules for cryptography.x509's import only (an
    # import finds a module there without importing its package); email.utils imported already
    # is used as it is.
    stand_in = None
    if EMAIL_UTILS not in sys.modules:
        stand_in = types.ModuleType(EMAIL_UTILS)
        stand_in.parseaddr = _parseaddr  # type: ignore[attr-defined]
        sys.modules[EMAIL_UTILS] = stand_in
    try:
        import_compiling_lazily("cryptography.x509", {LAZY_PATTERN_MODULE}, _astral)
    finally:
        if stand_in is not None and sys.modules.get(EMAIL_UTILS) is stand_in:
            del sys.modules[EMAIL_UTILS]


# On import: ptproxy.tunnel imports this module before any of its modules imports aioquic.
defer()
import_x509()
