"""Compiled twins of the hot paths. Selection switches live here and nowhere else.

``PTPROXY_NO_EXTENSIONS=1`` forces the pure-Python twins; ``PTPROXY_REQUIRE_EXTENSIONS=1`` turns a
missing compiled module into an ImportError (set in wheel and Docker tests so a broken build can never
ship the slow path silently). Each facade (``ptproxy.wire.chunked``, ...) calls :func:`load_twin`.
"""

import importlib
import os
from types import ModuleType
from typing import Any

__all__ = ["NO_EXTENSIONS", "REQUIRE_EXTENSIONS", "load_twin"]

NO_EXTENSIONS: bool = bool(os.environ.get("PTPROXY_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS: bool = bool(os.environ.get("PTPROXY_REQUIRE_EXTENSIONS")) and not NO_EXTENSIONS


def load_twin(pure: ModuleType, compiled: str, namespace: dict[str, Any]) -> None:
    """Fill a facade's ``namespace`` from ``ptproxy._speedups.<compiled>``, or else from ``pure``.

    The compiled twin is used unless ``NO_EXTENSIONS``; when it is missing the pure twin is used,
    unless ``REQUIRE_EXTENSIONS`` (the ImportError propagates). Binds every name of the twin's
    ``__all__`` (both twins export the same ones, a test checks it), ``_impl`` (the module chosen)
    and ``IMPLEMENTATION`` (``"compiled"`` or ``"pure"``).
    """
    impl, implementation = pure, "pure"
    if not NO_EXTENSIONS:
        try:
            impl, implementation = importlib.import_module(f"{__name__}.{compiled}"), "compiled"
        except ImportError:
            if REQUIRE_EXTENSIONS:
                raise
    namespace.update({name: getattr(impl, name) for name in impl.__all__})
    namespace["_impl"] = impl
    namespace["IMPLEMENTATION"] = implementation
