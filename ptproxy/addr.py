"""Socket addresses as log lines and messages show them. A leaf: imports nothing from ptproxy."""

from __future__ import annotations

from typing import Any

__all__ = ["UNIX_PREFIX", "format_address"]

_V4_MAPPED = "::ffff:"
# A UNIX socket address in the config, logs and metrics: "unix:/run/app.sock"; parsed addresses
# keep it as the host of a ``("unix:/path", 0)`` tuple, so they stay hashable (host, port) pairs.
UNIX_PREFIX = "unix:"


def format_address(addr: Any) -> str:
    """``host:port``, ``[host]:port`` for IPv6, ``?`` when unknown (e.g. a socket already gone).

    ``addr`` is a socket address tuple (``(host, port, ...)``). An IPv4-mapped IPv6 host (a
    dual-stack socket's view of an IPv4 peer) is shown as the IPv4 address it is. A UNIX socket
    (its path, as ``getsockname`` gives it, or ``("unix:/path", 0)``) is shown as ``unix:/path``."""
    if isinstance(addr, (str, bytes)) and addr:
        return UNIX_PREFIX + (addr.decode(errors="replace") if isinstance(addr, bytes) else addr)
    if not addr:
        return "?"
    host, port = str(addr[0]), addr[1]
    if host.startswith(UNIX_PREFIX):
        return host
    if host.startswith(_V4_MAPPED) and "." in host:
        host = host[len(_V4_MAPPED) :]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
