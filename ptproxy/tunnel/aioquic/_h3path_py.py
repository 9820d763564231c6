"""The pure twin of ``ptproxy._speedups.h3path``: PatchedH3Connection's own request-stream code.

With ``PTPROXY_NO_EXTENSIONS=1`` (or no compiled module) nothing is installed, so
``PatchedH3Connection.handle_event`` (h3.py, over aioquic's ``H3Connection.handle_event``,
``_receive_request_or_push_data``, ``_handle_request_or_push_frame`` and ``_decode_headers``),
``send_headers``, ``send_data`` and ``finish_stream`` (h3.py's, over aioquic's) run as written; the twin tests call it against the compiled one on the same inputs.
"""

from __future__ import annotations

from typing import Any

from ptproxy.tunnel.aioquic.h3 import PatchedH3Connection

__all__ = ["configure", "configure_send", "finish_stream", "handle_event", "send_data", "send_headers"]

handle_event = PatchedH3Connection.handle_event
send_headers = PatchedH3Connection.send_headers
send_data = PatchedH3Connection.send_data
finish_stream = PatchedH3Connection.finish_stream


def configure(**objects: Any) -> None:
    """Nothing to hand in: the Python code needs none of them."""


def configure_send(**objects: Any) -> None:
    """Nothing to hand in: the Python code needs none of them."""
