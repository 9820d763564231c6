"""The pure twin of ``ptproxy._speedups.quicrecv``: no fast path, aioquic's own code.

With ``PTPROXY_NO_EXTENSIONS=1`` (or no compiled module) :func:`receive_short` handles nothing, so
aioquic's ``receive_datagram`` runs for every datagram, and ``Enum.__hash__`` stays aioquic's (the
standard library's); the twin tests feed the same datagrams to both.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = ["configure", "configure_idle_timeout", "enum_hash", "idle_timeout", "receive_short", "use_frame_loop"]

enum_hash = Enum.__hash__


def configure(**objects: Any) -> None:
    """Nothing to hand in: aioquic's own path needs none of them."""


def configure_idle_timeout(**objects: Any) -> None:
    """Nothing to hand in: :func:`idle_timeout` calls the connection's method."""


def idle_timeout(conn: Any) -> float:
    """``conn._idle_timeout()`` (the compiled twin inlines aioquic's while the connection's is it)."""
    return conn._idle_timeout()  # type: ignore[no-any-return]


def receive_short(conn: Any, data: bytes, addr: Any, now: float) -> bool:
    """Never handled here: the caller runs aioquic's ``receive_datagram``."""
    return False


def use_frame_loop(payload_received: Any) -> None:
    """Nothing to do: aioquic's own frame loop runs."""
