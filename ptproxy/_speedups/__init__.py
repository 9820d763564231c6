"""Compiled twins of the hot paths. Selection switches live here and nowhere else.

``PTPROXY_NO_EXTENSIONS=1`` forces the pure-Python twins; ``PTPROXY_REQUIRE_EXTENSIONS=1`` turns a
missing compiled module into an ImportError (set in wheel and Docker tests so a broken build can never
ship the slow path silently).
"""

import os

__all__ = ["NO_EXTENSIONS", "REQUIRE_EXTENSIONS"]

NO_EXTENSIONS: bool = bool(os.environ.get("PTPROXY_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS: bool = bool(os.environ.get("PTPROXY_REQUIRE_EXTENSIONS")) and not NO_EXTENSIONS
