"""Congestion control state aioquic keeps private (the controllers themselves live in tunnel/cc/)."""

from __future__ import annotations

from aioquic.quic.congestion.cubic import CubicCongestionControl

__all__ = ["restart_cubic"]


def restart_cubic(cc: CubicCongestionControl, window: int) -> None:
    """Start Cubic (again) at ``window`` bytes instead of aioquic's fixed 10 datagrams.

    Cubic's reset (at start, and after 2 s without ACKs) sets its window and the window before the
    last reduction (``_W_max``) to 10 datagrams; both must move, or the cubic curve aims at the old
    maximum.
    """
    cc.congestion_window = cc._W_max = window
