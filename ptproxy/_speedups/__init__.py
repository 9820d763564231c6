"""Compiled twins of the hot paths. Selection switches live here and nowhere else.

``PTPROXY_NO_EXTENSIONS=1`` forces the pure-Python twins; ``PTPROXY_REQUIRE_EXTENSIONS=1`` turns a
missing compiled module into an ImportError (set in wheel and Docker tests so a broken build can never
ship the slow path silently). Each facade (``ptproxy.wire.chunked``, ...) calls :func:`load_twin`.
"""

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["NO_EXTENSIONS", "REQUIRE_EXTENSIONS", "install_twin", "load_twin"]

NO_EXTENSIONS: bool = bool(os.environ.get("PTPROXY_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS: bool = bool(os.environ.get("PTPROXY_REQUIRE_EXTENSIONS")) and not NO_EXTENSIONS


def load_twin(pure: ModuleType | str, compiled: str, namespace: dict[str, Any]) -> None:
    """Fill a facade's ``namespace`` from ``ptproxy._speedups.<compiled>``, or else from ``pure``.

    The compiled twin is used unless ``NO_EXTENSIONS``; when it is missing the pure twin is used,
    unless ``REQUIRE_EXTENSIONS`` (the ImportError propagates). Binds every name of the twin's
    ``__all__`` (both twins export the same ones, a test checks it), ``_impl`` (the module chosen)
    and ``IMPLEMENTATION`` (``"compiled"`` or ``"pure"``). ``pure`` given by name is imported only
    when it is the twin used (each is 0.1-0.25 ms of an end's start-up otherwise).
    """
    impl: ModuleType | None = None
    implementation = "pure"
    if not NO_EXTENSIONS:
        try:
            impl, implementation = importlib.import_module(f"{__name__}.{compiled}"), "compiled"
        except ImportError:
            if REQUIRE_EXTENSIONS:
                raise
    if impl is None:
        impl = importlib.import_module(pure) if isinstance(pure, str) else pure
    namespace.update({name: getattr(impl, name) for name in impl.__all__})
    namespace["_impl"] = impl
    namespace["IMPLEMENTATION"] = implementation


def install_twin(
    namespace: dict[str, Any],
    cls: type,
    methods: dict[str, str],
    configure: Callable[[ModuleType], object],
    layout_holds: Callable[[], bool],
) -> bool:
    """Put a facade's compiled methods on ``cls`` (once); False when the pure twin is selected or
    ``layout_holds()`` says the objects it reads do not look as expected (the Python code then runs).

    ``namespace`` is the facade's globals (filled by :func:`load_twin`, with an ``INSTALLED`` dict);
    the first call hands the compiled module to ``configure``, then sets ``cls.<attribute>`` to the
    twin's ``<name>`` for each item of ``methods``, keeping in ``INSTALLED`` what the class held
    before (None when it inherited the method).
    """
    if namespace["IMPLEMENTATION"] != "compiled" or not layout_holds():
        return False
    installed: dict[str, object] = namespace["INSTALLED"]
    if installed:
        return True
    configure(namespace["_impl"])
    for attribute, name in methods.items():
        installed[attribute] = cls.__dict__.get(attribute)
        setattr(cls, attribute, namespace[name])
    return True
