"""Facade over the per-stream record twins (``_streamrec_py``, compiled
``ptproxy._speedups.streamrec``): see ``load_twin``. The compiled record is handed the classes it
works with here, once, at import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.tunnel import _streamrec_py
from ptproxy.tunnel.streamtypes import DataFrame, HalfState, StreamEnded

__all__ = ["IMPLEMENTATION", *_streamrec_py.__all__]
load_twin(_streamrec_py, "streamrec", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel._streamrec_py import *  # noqa: F403

    IMPLEMENTATION: str

if globals()["IMPLEMENTATION"] == "compiled":
    # (The compiled record's default reset/stop code is a literal; a twin test checks it is
    # H3_REQUEST_CANCELLED.)
    globals()["_impl"].configure(half_state=HalfState, data_frame=DataFrame, stream_ended=StreamEnded)
