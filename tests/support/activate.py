"""systemd socket activation without systemd: pass listening sockets to a command the way
systemd does (sd_listen_fds(3)), so tests exercise the same environment.

As a script: ``python tests/support/activate.py FD:NAME [FD:NAME ...] -- COMMAND...`` moves each
inherited ``FD`` to 3, 4, ... in order, sets ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and ``LISTEN_PID``
(its own pid, which the command keeps: it is exec'd, not forked) and execs ``COMMAND``. From a
test, :func:`popen` does the same for a ``{name: socket}`` mapping (the test keeps its copies, so
it can connect before the command even started).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FIRST_FD = 3


def popen(command: list[str], sockets: dict[str, Any], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` with ``sockets`` passed as systemd would, in the mapping's order."""
    pairs = [f"{sock.fileno()}:{name}" for name, sock in sockets.items()]
    fds = tuple(sock.fileno() for sock in sockets.values())
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *pairs, "--", *command], pass_fds=fds, **kwargs
    )


def _exec(argv: list[str]) -> None:
    split = argv.index("--")
    specs = [spec.split(":", 1) for spec in argv[:split]]
    command = argv[split + 1 :]
    # Copies above every target first, since a source may itself be a target number.
    floor = FIRST_FD + len(specs)
    copies = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, floor) for fd, _ in specs]
    for fd, _ in specs:
        if int(fd) >= floor:
            os.close(int(fd))
    for i, copy in enumerate(copies):
        os.dup2(copy, FIRST_FD + i)  # inheritable by default
        os.close(copy)
    os.environ["LISTEN_FDS"] = str(len(specs))
    os.environ["LISTEN_FDNAMES"] = ":".join(name for _, name in specs)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execvp(command[0], command)


if __name__ == "__main__":
    _exec(sys.argv[1:])
