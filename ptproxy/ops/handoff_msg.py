"""The hand-off's messages (SIGUSR2 restart), sans-IO: bytes in, values out.

Two channels join the old process and the one it starts (see :mod:`ptproxy.ops.handoff`):

* the **control** channel, an ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair (message boundaries kept,
  file descriptors ride along with ``SCM_RIGHTS``). Each message is one small JSON object with a
  ``type``: ``sockets`` (old → new: the listening sockets, by name, in the order of the passed file
  descriptors), ``ready`` (new → old: serving; carries the new pid), ``takeover`` (old → new, server
  end: the old process has stopped reading the shared UDP socket, read it yourself now).
* the **datagram** channel (server end only), an ``AF_UNIX``/``SOCK_DGRAM`` pair: while the old
  process still holds its QUIC sessions it reads the shared UDP socket alone and forwards every
  datagram that is not for one of its connections, packed by :func:`pack_datagram` (peer address +
  payload), and the new process feeds them to its endpoint as if it had read them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from ptproxy.errors import PtproxyError

__all__ = [
    "FORWARD_NAME",
    "HandoffError",
    "Ready",
    "Sockets",
    "TakeOver",
    "decode",
    "encode_ready",
    "encode_sockets",
    "encode_takeover",
    "pack_datagram",
    "unpack_datagram",
]

VERSION = 1
# The name of the datagram channel's end among the passed descriptors: not a valid listener name
# (those are route names or ``http``/``quic``), so it cannot collide with one.
FORWARD_NAME = "@forward"
# SCM_RIGHTS carries at most 253 descriptors per message (SCM_MAX_FD).
MAX_FDS = 253
MAX_MESSAGE = 64 * 1024


class HandoffError(PtproxyError):
    """A hand-off message that cannot be understood (a bug, or another program on the socket)."""


@dataclass(frozen=True, slots=True)
class Sockets:
    """Old → new: ``names[i]`` is the name of the i-th passed descriptor."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ready:
    """New → old: the new process serves (its pid, for ``MAINPID=`` and the log)."""

    pid: int


@dataclass(frozen=True, slots=True)
class TakeOver:
    """Old → new (server end): the shared UDP socket is yours alone from now on."""


Message = Sockets | Ready | TakeOver


def _encode(kind: str, **fields: Any) -> bytes:
    return json.dumps({"v": VERSION, "type": kind, **fields}, separators=(",", ":")).encode()


def encode_sockets(names: list[str] | tuple[str, ...]) -> bytes:
    """The header sent with the descriptors; refuses what the receiver could not map back."""
    if len(set(names)) != len(names):
        raise HandoffError(f"hand-off: duplicate socket names in {list(names)}")
    if len(names) > MAX_FDS:
        raise HandoffError(f"hand-off: {len(names)} sockets, at most {MAX_FDS} fit in one message")
    return _encode("sockets", names=list(names))


def encode_ready(pid: int) -> bytes:
    return _encode("ready", pid=pid)


def encode_takeover() -> bytes:
    return _encode("takeover")


def decode(data: bytes, nfds: int = 0) -> Message:
    """One control message; ``nfds``: how many descriptors arrived with it (checked for ``sockets``)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HandoffError(f"hand-off: unreadable message {data[:60]!r}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise HandoffError(f"hand-off: not a version {VERSION} message: {data[:60]!r}")
    kind = obj.get("type")
    if kind == "sockets":
        names = obj.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HandoffError(f"hand-off: bad socket names {names!r}")
        if len(names) != nfds or len(set(names)) != len(names):
            raise HandoffError(f"hand-off: {len(names)} socket names {names} for {nfds} descriptors")
        return Sockets(tuple(names))
    if kind == "ready":
        pid = obj.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise HandoffError(f"hand-off: bad pid in ready message: {pid!r}")
        return Ready(pid)
    if kind == "takeover":
        return TakeOver()
    raise HandoffError(f"hand-off: unknown message type {kind!r}")


# -- forwarded datagrams -------------------------------------------------------------------------

# host length, then host (ASCII), port, and 0 or 2 extra IPv6 fields (flowinfo, scope id).
_PORT = struct.Struct("!HB")
_EXTRA = struct.Struct("!II")


def pack_datagram(addr: Any, data: bytes) -> bytes:
    """A UDP datagram and the address it came from, as one message of the datagram channel."""
    host = str(addr[0]).encode("ascii")
    if len(host) > 255:
        raise HandoffError(f"hand-off: address too long: {addr!r}")
    extra = _EXTRA.pack(addr[2], addr[3]) if len(addr) == 4 else b""
    return b"".join((bytes((len(host),)), host, _PORT.pack(addr[1], len(extra) // 4), extra, data))


def unpack_datagram(message: bytes) -> tuple[Any, bytes]:
    """(address tuple as the socket would report it, payload)."""
    try:
        n = message[0]
        host = message[1 : 1 + n].decode("ascii")
        port, words = _PORT.unpack_from(message, 1 + n)
        pos = 1 + n + _PORT.size
        if words == 0:
            return (host, port), message[pos:]
        if words != 2:
            raise HandoffError(f"hand-off: forwarded datagram with {words} address words")
        flowinfo, scope = _EXTRA.unpack_from(message, pos)
        return (host, port, flowinfo, scope), message[pos + _EXTRA.size :]
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise HandoffError(f"hand-off: truncated forwarded datagram ({len(message)} bytes): {exc}") from None
