"""When does an end bind its QUIC port? A ``python -c`` preamble for the tests that ask.

At the first import of one of the watched modules (``sys.argv[3]``, comma-separated) the preamble
tries to bind the port (``sys.argv[2]``, 127.0.0.1, UDP) itself, prints ``bound before <module>``
(it could not: the end had bound it) or ``not bound before <module>``, and ends the process at once.
A test appends the code that starts the end (its configuration file: ``sys.argv[1]``). Also the
free port and the socket-registry cleanup those tests share."""

from __future__ import annotations

import socket
import textwrap

from ptproxy import sockets

WATCH_PREAMBLE = textwrap.dedent(
    """
    import importlib.abc, socket, sys
    PORT = int(sys.argv[2])
    WATCH = sys.argv[3].split(",")

    class Check(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in WATCH:
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.bind(("127.0.0.1", PORT))
                except OSError:
                    print("bound before", name)
                else:
                    print("not bound before", name)
                sys.stdout.flush()
                import os
                os._exit(0)
            return None

    sys.meta_path.insert(0, Check())
    """
)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def close_registered_sockets() -> None:
    """Close every socket bound early or registered as inherited (the tests' cleanup)."""
    sockets.discard_early()
    for sock in sockets.inherited.values():
        sock.close()
    sockets.inherited.clear()
