"""User-space link emulator: two network namespaces joined by TUN devices and a forwarding
process that applies one-way delay, jitter, random loss and a rate limit with a drop-tail queue.

The kernel of the benchmark VMs has no netem qdisc, so this emulates the link at packet level:
TCP and QUIC go through the same model. Needs root (namespaces, /dev/net/tun).

    from tools.netem import LinkEmulator

    from tools.netem import LinkProfile
    with LinkEmulator(LinkProfile(rtt_ms=50, loss=0.01, rate_mbit=100)) as link:
        link.run_in_b(["my-server", "--listen", link.b_addr])
        link.run_in_a(["my-client", link.b_addr]).wait()
        print(link.stats())

CLI: ``python -m tools.netem --help``.
"""

from .emulator import LinkEmulator, python_env
from .model import Direction, DirectionParams
from .netns import available, cleanup
from .profile import LinkProfile

__all__ = [
    "Direction",
    "DirectionParams",
    "LinkEmulator",
    "LinkProfile",
    "available",
    "cleanup",
    "python_env",
]
