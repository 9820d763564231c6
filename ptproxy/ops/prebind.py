"""The server end's QUIC port bound by ``python -m ptproxy`` before the command line's own imports.

A launch of both ends waits for the server end's port (whoever starts the client end waits for it,
or the client's first Initial draws ICMP port unreachable). ops/cli.py binds it before the
configuration module (``bind_quic_from_file``), but after its own imports (argparse, logging,
ipaddress: ~35M instructions, ~5 ms, on that path). So ``__main__`` calls :func:`prebind` first:
for a plain command line (only ``-c``/``--config`` and the log options, no command, no
``--check``) and a file whose ``[general]`` names a server end, the socket is bound here with
``socket`` and ``tomllib`` only and kept; ``bind_quic_from_file`` takes it (:func:`take`) once it
has made its own checks of the same table, and registers it as before. Anything this module is not
sure of binds nothing: ops/cli.py then does what it always did, errors and all. A socket not taken
is closed (:func:`take` for another address, :func:`close` when start-up ends without it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["prebind", "take", "close"]

DEFAULT_CONFIG = "/etc/ptproxy/config.toml"  # ops/cli.py's (tests/unit check they agree)
_DEFAULTS = ("::", 20010)  # General's bind_address and quic_port (ops/cli.py's copies)
# Options that take a value, as written by ops/cli.py's parser; any other argument: no prebind.
_CONFIG_OPTS = ("-c", "--config")
_OTHER_OPTS = ("--log-level", "--log-format")

_bound: tuple[str, int, socket.socket] | None = None


def _config_path(argv: list[str]) -> str | None:
    """The configuration path of a command line that runs an end, or None when it is anything
    else or written in a form argparse would have to interpret (abbreviations, a command)."""
    path = DEFAULT_CONFIG
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _CONFIG_OPTS or name in _OTHER_OPTS:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                value = argv[i + 1]
                i += 1
            if not value or value.startswith("-"):
                return None  # argparse's reading of it is not this module's to guess
            if name in _CONFIG_OPTS:
                path = value
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--") and "=" not in arg:
            path = arg[2:]
        else:
            return None
        i += 1
    return path


def prebind(argv: list[str], environ: Mapping[str, str] = os.environ) -> None:
    """Bind the server end's QUIC port now if the command line and the file plainly ask for it
    (see the module's text); never raises, binds nothing when in doubt."""
    global _bound
    if _bound is not None or "LISTEN_FDS" in environ or "PTPROXY_HANDOFF" in environ:
        return
    path = _config_path(argv)
    if path is None:
        return
    import tomllib

    try:
        with open(path, "rb") as f:
            general = tomllib.load(f).get("general")
    except (OSError, ValueError):
        return
    if not isinstance(general, dict) or general.get("mode") != "Server":
        return
    address = general.get("bind_address", _DEFAULTS[0])
    port = general.get("quic_port", _DEFAULTS[1])
    if not isinstance(address, str) or type(port) is not int or not 1 <= port <= 65535:
        return
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.inet_pton(family, address)  # an IP literal; ops/cli.py checks it with ipaddress too
    except OSError:
        return
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind((address, port))
    except OSError:
        sock.close()  # ops/cli.py tries again and says why (debug), the listener reports it
        return
    _bound = (address, port, sock)


def take(address: str, port: int) -> socket.socket | None:
    """The socket :func:`prebind` bound for ``address`` and ``port`` (once), else None; one bound
    for anything else is closed."""
    global _bound
    bound, _bound = _bound, None
    if bound is None:
        return None
    if bound[:2] == (address, port):
        return bound[2]
    bound[2].close()
    return None


def close() -> None:
    """Close a socket :func:`prebind` bound and nothing took."""
    global _bound
    if _bound is not None:
        _bound[2].close()
        _bound = None
