"""Regular expressions that other modules' bodies compile at import, compiled at first use instead.

Start-up (issue 12 item 8): some modules an end imports compile expressions it never uses, at
every start: cryptography.x509.name's RFC 4514 value expression (87.8M instructions, ranges up
to U+10FFFF expanded code point by code point; tunnel/deferred.py) and platform's eight (6.5M;
uuid imports platform, msgspec imports uuid; ptproxy/__main__.py). :func:`import_compiling_lazily`
imports a module with ``re.compile`` wrapped for that import only: a call from one of the named
modules' own code that ``wanted`` accepts gets a :class:`LazyPattern`, every other call compiles
at once as before, and ``re.compile`` is restored after.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["LazyPattern", "import_compiling_lazily"]


class LazyPattern:
    """A compiled regular expression made at its first attribute lookup (``match``, ``pattern``...)."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: Any, flags: int) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[Any] | None = None

    def __getattr__(self, attr: str) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(*self._args)
        return getattr(compiled, attr)


def _any(_pattern: Any) -> bool:
    return True


def import_compiling_lazily(
    name: str, modules: Collection[str], wanted: Callable[[Any], bool] = _any
) -> None:
    """Import ``name`` (if not imported yet; a missing module is left to its real importer), with
    the expressions ``modules`` compile during it (those ``wanted`` accepts) made lazily. Modules
    already imported are not run again: nothing changes for them."""
    if name in sys.modules:
        return
    compile_now = re.compile

    def compile_lazily(pattern: Any, flags: int = 0) -> Any:
        if (
            type(pattern) in (str, bytes)
            and sys._getframe(1).f_globals.get("__name__") in modules
            and wanted(pattern)
        ):
            return LazyPattern(pattern, flags)
        return compile_now(pattern, flags)

    re.compile = compile_lazily
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    finally:
        re.compile = compile_now
