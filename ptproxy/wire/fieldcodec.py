"""Facade for the field codec twins: selection only (aiohttp style).

The compiled twin ``ptproxy._speedups.fieldcodec`` is used unless ``PTPROXY_NO_EXTENSIONS=1``; when it is
missing the pure twin ``_fieldcodec_py`` is used, unless ``PTPROXY_REQUIRE_EXTENSIONS=1`` (ImportError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import NO_EXTENSIONS, REQUIRE_EXTENSIONS
from ptproxy.wire import _fieldcodec_py as _impl

__all__ = [
    "IMPLEMENTATION",
    "HOP_BY_HOP",
    "title_case",
    "validate_name",
    "validate_value",
    "h1_to_h3_fields",
    "h3_to_h1_fields",
]

IMPLEMENTATION = "pure"
if not (TYPE_CHECKING or NO_EXTENSIONS):
    try:
        from ptproxy._speedups import fieldcodec as _impl  # type: ignore[no-redef]

        IMPLEMENTATION = "compiled"
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise

HOP_BY_HOP = _impl.HOP_BY_HOP
title_case = _impl.title_case
validate_name = _impl.validate_name
validate_value = _impl.validate_value
h1_to_h3_fields = _impl.h1_to_h3_fields
h3_to_h1_fields = _impl.h3_to_h1_fields
