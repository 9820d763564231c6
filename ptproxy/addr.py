"""Socket addresses as log lines and messages show them. A leaf: imports nothing from ptproxy."""

from __future__ import annotations

from typing import Any

__all__ = ["format_address"]

_V4_MAPPED = "::ffff:"


def format_address(addr: Any) -> str:
    """``host:port``, ``[host]:port`` for IPv6, ``?`` when unknown (e.g. a socket already gone).

    ``addr`` is a socket address tuple (``(host, port, ...)``). An IPv4-mapped IPv6 host (a
    dual-stack socket's view of an IPv4 peer) is shown as the IPv4 address it is."""
    if not addr:
        return "?"
    host, port = str(addr[0]), addr[1]
    if host.startswith(_V4_MAPPED) and "." in host:
        host = host[len(_V4_MAPPED) :]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
