"""Facade for the chunk framing twins: selection only (aiohttp style).

The compiled twin ``ptproxy._speedups.chunked`` is used unless ``PTPROXY_NO_EXTENSIONS=1``; when it is
missing the pure twin ``_chunked_py`` is used, unless ``PTPROXY_REQUIRE_EXTENSIONS=1`` (ImportError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import NO_EXTENSIONS, REQUIRE_EXTENSIONS
from ptproxy.wire import _chunked_py as _impl

__all__ = [
    "IMPLEMENTATION",
    "chunk",
    "chunk_header",
    "CHUNK_END",
    "last_chunk",
    "ChunkCoalescer",
    "ChunkedScanner",
]

IMPLEMENTATION = "pure"
if not (TYPE_CHECKING or NO_EXTENSIONS):
    try:
        from ptproxy._speedups import chunked as _impl  # type: ignore[no-redef]

        IMPLEMENTATION = "compiled"
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise

chunk = _impl.chunk
chunk_header = _impl.chunk_header
CHUNK_END = _impl.CHUNK_END
last_chunk = _impl.last_chunk
ChunkCoalescer = _impl.ChunkCoalescer
ChunkedScanner = _impl.ChunkedScanner
