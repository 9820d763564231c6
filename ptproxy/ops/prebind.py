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

The file is read without tomllib when it is plainly written (:func:`_plain_general`: ``[general]``
as a header of its own, its ``mode``, ``bind_address`` and ``quic_port`` as one-line basic strings
and decimal integers, no multi-line strings anywhere), and the socket is made with ``_socket``:
``tomllib`` (re, typing, datetime, string) and ``socket`` (enum and its IntEnum conversions) were
~70M of the ~115M instructions from exec to the bound port. Anything else is read with tomllib as
before; a reading that differed from tomllib's could only bind a socket ``take`` then closes.
"""

from __future__ import annotations

import _socket
import os
from collections.abc import Mapping

TYPE_CHECKING = False  # typing's: not imported on this path
if TYPE_CHECKING:
    import socket

__all__ = ["prebind", "take", "close", "plain_options"]

DEFAULT_CONFIG = "/etc/ptproxy/config.toml"  # ops/cli.py's (tests/unit check they agree)
_DEFAULTS = ("::", 20010)  # General's bind_address and quic_port (ops/cli.py's copies)
# Options that take a value, as written by ops/cli.py's parser; any other argument: no prebind.
_CONFIG_OPTS = ("-c", "--config")
_OTHER_OPTS = ("--log-level", "--log-format")

_bound: tuple[str, int, _socket.socket] | None = None
_KEYS = ("mode", "bind_address", "quic_port")  # what prebind reads of [general]


def _config_path(argv: list[str]) -> str | None:
    """The configuration path of a command line that runs an end, or None when it is anything
    else or written in a form argparse would have to interpret (abbreviations, a command)."""
    options = plain_options(argv)
    return None if options is None else options["config"]


def plain_options(argv: list[str]) -> dict[str, str] | None:
    """A command line that runs an end, plainly written: ``config`` (the default if not given)
    and ``log_level`` / ``log_format`` as given (unchecked; the last of each, as argparse), or None
    when it is anything else or written in a form argparse would have to interpret (abbreviations,
    a command, ``--check``). ops/cli.py reads such a line without argparse."""
    options = {"config": DEFAULT_CONFIG}
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
            options["config" if name in _CONFIG_OPTS else name[2:].replace("-", "_")] = value
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--") and "=" not in arg:
            options["config"] = arg[2:]
        else:
            return None
        i += 1
    return options


def prebind(argv: list[str], environ: Mapping[str, str] = os.environ) -> None:
    """Bind the server end's QUIC port now if the command line and the file plainly ask for it
    (see the module's text); never raises, binds nothing when in doubt."""
    global _bound
    if _bound is not None or "LISTEN_FDS" in environ or "PTPROXY_HANDOFF" in environ:
        return
    path = _config_path(argv)
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    general = _plain_general(data)
    if general is None:  # not plainly written: tomllib's reading
        import tomllib

        try:
            general = tomllib.loads(data.decode()).get("general")
        except ValueError:
            return
    if not isinstance(general, dict) or general.get("mode") != "Server":
        return
    address = general.get("bind_address", _DEFAULTS[0])
    port = general.get("quic_port", _DEFAULTS[1])
    if not isinstance(address, str) or type(port) is not int or not 1 <= port <= 65535:
        return
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    try:
        _socket.inet_pton(family, address)  # an IP literal; ops/cli.py checks it with ipaddress too
    except OSError:
        return
    sock = _socket.socket(family, _socket.SOCK_DGRAM)
    try:
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
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
        import socket

        sock = bound[2]
        return socket.socket(sock.family, sock.type, sock.proto, sock.detach())
    bound[2].close()
    return None


def _bare(name: str) -> bool:
    """A bare TOML key (ASCII letters, digits, ``_`` and ``-``)."""
    return name.isascii() and name.replace("_", "a").replace("-", "a").isalnum()


def _plain_general(data: bytes) -> dict[str, str | int] | None:
    """``mode``, ``bind_address`` and ``quic_port`` of ``[general]`` (those it has) as tomllib would
    read them, or None when the file is not written plainly enough to be sure without it: not
    UTF-8, a multi-line string anywhere, a line opening with ``[`` that is not a plain table header,
    ``[general]`` twice, a key outside it that may define it (``general.mode = ...``), or one of
    the three keys written any other way than ``key = "text"`` / ``key = 123`` (an optional
    comment after)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    if '"""' in text or "'''" in text:
        return None
    general: dict[str, str | int] | None = None
    table = ""
    for raw in text.split("\n"):
        line = raw.strip(" \t\r")
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            header = line.partition("#")[0].rstrip(" \t")
            name = header[2:-2] if header[:2] == "[[" and header[-2:] == "]]" else header[1:-1]
            if header[-1:] != "]" or not all(map(_bare, name.split("."))):
                return None  # a quoted or spaced header, or an array of arrays going on: unsure
            table = header
            if table == "[general]":
                if general is not None:
                    return None
                general = {}
            continue
        key, eq, value = line.partition("=")
        key = key.rstrip(" \t")
        if table != "[general]":
            if "general" in key:
                return None  # a dotted or quoted key that might write [general]
            continue
        if general is None or not eq or not _bare(key):
            return None  # a quoted or dotted key, or an array going on
        if key not in _KEYS:
            continue
        if key in general:
            return None
        value = value.strip(" \t")
        item: str | int
        if value[:1] == '"':
            end = value.find('"', 1)
            text_item, rest = value[1:end], value[end + 1:]
            if end < 0 or "\\" in text_item or not text_item.isprintable():
                return None  # unclosed, an escape, or a control character
            item = text_item
        else:
            digits, _, rest = value.partition(" ")
            digits, hash_, tail = digits.partition("#")
            rest = hash_ + tail + " " + rest
            if not digits.isascii() or not digits.isdigit() or (digits[0] == "0" and len(digits) > 1):
                return None
            item = int(digits)
        rest = rest.strip(" \t")
        if rest and rest[0] != "#":
            return None
        general[key] = item
    return general if general is not None else {}


def close() -> None:
    """Close a socket :func:`prebind` bound and nothing took."""
    global _bound
    if _bound is not None:
        _bound[2].close()
        _bound = None
