"""When does an end bind its QUIC port? A ``python -c`` preamble for the tests that ask.

At the first import of one of the watched modules (``sys.argv[3]``, comma-separated) the preamble
tries to bind the port (``sys.argv[2]``, 127.0.0.1, UDP) itself, prints ``bound before <module>``
(it could not: the end had bound it) or ``not bound before <module>``, and ends the process at once.
A test appends the code that starts the end (its configuration file: ``sys.argv[1]``)."""

from __future__ import annotations

import textwrap

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
