"""Only the extension list lives here; metadata is in pyproject.toml.

The ``.pyx`` twins in ptproxy/_speedups are compiled when Cython and a C compiler are available.
``PTPROXY_NO_EXTENSIONS=1`` builds a pure wheel; a failed compile (no compiler) also falls back to a
pure install with a warning, because every compiled module has a pure-Python twin.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
NO_EXTENSIONS = bool(os.environ.get("PTPROXY_NO_EXTENSIONS"))


class OptionalBuildExt(build_ext):
    """Build extensions, but keep going (pure install) when the compiler is missing or fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "pure install"
            self._warn(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(
            f"WARNING: compiling ptproxy speedups failed ({exc}); installing the pure-Python twins",
            file=sys.stderr,
        )


def extensions() -> list:
    if NO_EXTENSIONS:
        print("*** Pure build: PTPROXY_NO_EXTENSIONS is set, no compiled speedups ***", file=sys.stderr)
        return []
    sources = sorted((HERE / "ptproxy" / "_speedups").glob("*.pyx"))
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython is not installed; installing the pure-Python twins", file=sys.stderr)
        return []
    from setuptools import Extension

    exts = [
        Extension(
            f"ptproxy._speedups.{src.stem}",
            [str(src.relative_to(HERE))],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    directives = {"language_level": "3", "boundscheck": False, "wraparound": False}
    if os.environ.get("PTPROXY_CYTHON_TRACE"):
        directives["linetrace"] = True
    try:
        return cythonize(exts, compiler_directives=directives, quiet=True)
    except Exception as exc:  # noqa: BLE001
        print(f"WARNING: cythonize failed ({exc}); installing the pure-Python twins", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
