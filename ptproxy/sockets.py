"""Listening sockets: bound here, or inherited (systemd socket activation, a hand-off).

Every listener of both ends gets its socket from this module, so a socket passed by a service
manager is used exactly as one bound here would be. It sits beside ``ptproxy.addr`` (not in
``ops``) because the two ends may not import ``ops`` (tests/unit/test_layers.py).

The API (module-level state: one process, one registry):

- :func:`listener_socket` ``(name, address, *, field, unix_mode)`` → a listening stream socket
  (TCP or UNIX). The inherited socket registered under ``name`` when there is one, else a new one
  bound to ``address`` (``(ip, port)``, or ``("unix:/abs/path", 0)`` as
  ``ptproxy.ops.config.parse_socket_address`` returns it). Pass it to
  ``loop.create_server(factory, sock=sock, backlog=BACKLOG)``: asyncio (and uvloop) listen on the
  socket again with ``backlog``, 100 unless given. ``field`` names the config field in errors
  (``"[general] http_bind_address"``, ``"routes[1].tcp_bind_address"``). Names: ``http`` for the
  general HTTP listener, the route's name for a route's listener (HTTP or TCP stream route).
- :func:`inherited_socket` ``(name, kind)`` → the inherited socket of that name (checked to be of
  ``kind``: ``"stream"`` or ``"datagram"``) or None; the server end's QUIC socket is ``quic``.
- :func:`read_environment` reads ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES`` (sd_listen_fds(3))
  into the registry and unsets them, so no child process inherits them.
- :func:`adopt` ``(name, sock, *, owns_file=False, early=False)`` registers a socket from any other
  source (the SIGUSR2 hand-off); ``owns_file``: this process removes its UNIX socket file at exit;
  ``early``: a socket this process bound itself at start-up, before the heavy imports
  (ops/cli.py), which the listener takes without logging it as passed.
- :func:`close_unclaimed` (after every listener started): a passed socket no listener took is
  logged once as a warning and closed.
- :func:`remove_socket_files` (at clean shutdown) removes the UNIX socket files this process
  bound, each only if the path still holds that same socket (same inode);
  :func:`disown_socket_files` forgets them instead (a process handing its sockets to another).

A UNIX socket path that already exists is probed: a socket nobody accepts on (ECONNREFUSED, left
by a crash) is removed and bound anew; one that accepts is an error, as is a file that is not a
socket. Every error is a :class:`ListenerError` with a one-line message naming the field and path.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import MutableMapping
from typing import Literal

from ptproxy.addr import UNIX_PREFIX, format_address
from ptproxy.errors import StartupError

__all__ = [
    "BACKLOG",
    "DEFAULT_UNIX_MODE",
    "ListenerError",
    "adopt",
    "close_unclaimed",
    "discard_early",
    "disown_socket_files",
    "inherited",
    "inherited_socket",
    "listener_socket",
    "read_environment",
    "remove_socket_files",
]

logger = logging.getLogger("ptproxy.sockets")

Kind = Literal["stream", "datagram"]
DEFAULT_UNIX_MODE = 0o666
SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed descriptors start at 3, in order
# The kernel caps the backlog at net.core.somaxconn. asyncio's create_server listens again with
# its own backlog (default 100), so it must be passed there too: with 100, 1024 clients connecting
# at once overflow the accept queue, and the kernel drops their SYNs (or handshake ACKs) for 1-3 s
# of retransmission, the whole tail of a wrk -c1024 run.
BACKLOG = socket.SOMAXCONN
_PROBE_TIMEOUT = 1.0  # s to wait for a live UNIX socket to accept the probe connection

# Sockets passed to this process, by name, until a listener takes them.
inherited: dict[str, socket.socket] = {}
# Names of the inherited sockets this process bound itself early in its start-up (ops/cli.py).
_early: set[str] = set()
# UNIX socket files this process bound, removed at clean shutdown: path → (st_dev, st_ino,
# st_ctime_ns), the ctime because a freed inode number is reused at once (tmpfs does).
_owned_files: dict[str, tuple[int, int, int]] = {}


class ListenerError(StartupError):
    """A listening socket cannot be had; the message names the config field or socket name."""


# -- inherited sockets -----------------------------------------------------------------------------


def adopt(name: str, sock: socket.socket, *, owns_file: bool = False, early: bool = False) -> None:
    """Register ``sock`` as the socket of the listener called ``name``.

    ``owns_file``: a UNIX socket whose file this process is to remove at clean shutdown (a socket
    handed over by a previous ptproxy, not one systemd created and removes itself). ``early``:
    bound by this process before its listener exists (ops/cli.py), not passed to it."""
    if name in inherited:
        raise ListenerError(f"two sockets passed as {name!r}; a listener takes one socket")
    sock.set_inheritable(False)  # FD_CLOEXEC: no child process keeps the listener open
    inherited[name] = sock
    if early:
        _early.add(name)
    if owns_file and sock.family == socket.AF_UNIX:
        _own(sock.getsockname())


def read_environment(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Adopt the sockets systemd passed (``LISTEN_FDS``); return their names.

    The variables are removed whether they were meant for us or not (sd_listen_fds(3) with
    ``unset_environment``), so a child process never takes them for its own."""
    env = os.environ if environ is None else environ
    pid, count, names = (env.pop(k, None) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if count is None:
        return []
    if pid != str(os.getpid()):
        # Set for another process (a wrapper that did not exec us): the fds are not ours to take.
        logger.warning("LISTEN_FDS is set for process %s, not this one (%d): ignoring it", pid, os.getpid())
        return []
    if not count.isdigit():
        raise ListenerError(f"LISTEN_FDS: expected a number of sockets, got {count!r}")
    labels = names.split(":") if names else []
    taken = []
    for i in range(int(count)):
        fd = SD_LISTEN_FDS_START + i
        # systemd names an unnamed socket "unknown" (FileDescriptorName= unset).
        name = labels[i] if i < len(labels) and labels[i] else "unknown"
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ListenerError(f"LISTEN_FDS: fd {fd} ({name!r}) is not a usable socket: {exc.strerror}") from None
        adopt(name, sock)
        taken.append(name)
    return taken


def _describe(sock: socket.socket) -> str:
    family = {socket.AF_INET: "TCP", socket.AF_INET6: "TCP", socket.AF_UNIX: "UNIX"}.get(sock.family)
    if sock.type == socket.SOCK_DGRAM:
        family = {socket.AF_INET: "UDP", socket.AF_INET6: "UDP", socket.AF_UNIX: "UNIX datagram"}.get(sock.family)
    try:
        where = format_address(sock.getsockname())
    except OSError:
        where = "?"
    return f"a {family or f'family {sock.family}'} socket at {where}"


def _check_kind(name: str, sock: socket.socket, kind: Kind) -> None:
    if kind == "datagram":
        if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ListenerError(
                f"socket {name!r} was passed as {_describe(sock)}; it must be a UDP socket (ListenDatagram=)"
            )
        return
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        raise ListenerError(
            f"socket {name!r} was passed as {_describe(sock)}; it must be a TCP or UNIX stream "
            "socket (ListenStream=)"
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ListenerError(
            f"socket {name!r} was passed as {_describe(sock)} that is not listening "
            "(a .socket unit needs Accept=no)"
        )


def inherited_socket(name: str, kind: Kind) -> socket.socket | None:
    """The inherited socket called ``name``, taken out of the registry; None when none was
    passed. Raises ListenerError when it is not of ``kind``."""
    sock = inherited.pop(name, None)
    _early.discard(name)
    if sock is not None:
        try:
            _check_kind(name, sock, kind)
        except ListenerError:
            sock.close()
            raise
    return sock


def close_unclaimed() -> list[str]:
    """Close every inherited socket no listener took (a typo in FileDescriptorName=, or a
    listener removed from the config); one warning each. Returns their names."""
    names = sorted(inherited)
    for name in names:
        sock = inherited.pop(name)
        _early.discard(name)
        logger.warning("socket %r was passed to ptproxy (%s) but no listener is called so: closing it",
                       name, _describe(sock))
        sock.close()
    return names


def discard_early() -> list[str]:
    """Close the sockets this process bound early and no listener took yet, removing their UNIX
    socket files (start-up failed after binding them: nothing stays bound). Returns their names."""
    names = sorted(_early & inherited.keys())
    for name in names:
        sock = inherited.pop(name)
        if sock.family == socket.AF_UNIX:
            path = sock.getsockname()
            identity = _owned_files.pop(path, None)
            try:
                if identity is not None and _identity(os.lstat(path)) == identity:
                    os.unlink(path)
            except OSError:
                pass
        sock.close()
    _early.clear()
    return names


# -- binding ---------------------------------------------------------------------------------------


def listener_socket(
    name: str, address: tuple[str, int], *, field: str, unix_mode: int = DEFAULT_UNIX_MODE
) -> socket.socket:
    """A listening stream socket for the listener ``name``: the inherited one, else bound to
    ``address`` (``("unix:/path", 0)`` for a UNIX socket). Raises ListenerError."""
    early = name in _early
    sock = inherited_socket(name, "stream")
    if sock is not None:
        if early:
            logger.debug("%s: the socket bound at start-up (%s)", field, _describe(sock))
        else:
            logger.info("%s: using the socket passed as %r (%s)", field, name, _describe(sock))
        return sock
    host, port = address
    if host.startswith(UNIX_PREFIX):
        return _bind_unix(host[len(UNIX_PREFIX):], field=field, mode=unix_mode)
    return _bind_tcp(host, port, field=field)


def _bind_tcp(host: str, port: int, *, field: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: the accepted sockets inherit the object's proto, and asyncio's transport
    # sets TCP_NODELAY only on a socket whose proto says TCP (uvloop on every TCP socket).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # As asyncio's create_server did before this module: "[::]" is IPv6 only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"{field}: cannot listen at {format_address((host, port))}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def _bind_unix(path: str, *, field: str, mode: int) -> socket.socket:
    where = f"{field}: {UNIX_PREFIX}{path}"
    _clear_stale(path, where)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # After bind, not via umask: the umask is process-wide and other threads may create files.
        os.chmod(path, mode)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"{where}: cannot listen: {exc.strerror}") from None
    _own(path)
    return sock


def _clear_stale(path: str, where: str) -> None:
    """Remove a socket file nobody accepts on (a crashed process's); refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenerError(f"{where}: cannot inspect the path: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenerError(f"{where}: the path exists and is not a socket; remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        logger.info("%s: removing the stale socket file (nothing accepts on it)", where)
        os.unlink(path)
        return
    except OSError as exc:
        # EAGAIN: a live listener with a full backlog; EACCES: not ours to judge.
        live = exc.errno in (errno.EAGAIN, errno.ETIMEDOUT) or isinstance(exc, TimeoutError)
        if not live:
            raise ListenerError(f"{where}: cannot check the existing socket: {exc.strerror}") from None
    finally:
        probe.close()
    raise ListenerError(f"{where}: another process is listening on this socket; stop it or choose another path")


def _own(path: str) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    _owned_files[path] = _identity(st)


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_ctime_ns


def remove_socket_files() -> None:
    """Remove the UNIX socket files this process bound, each only if the path still holds the
    same file (a successor may have replaced it with its own)."""
    for path, identity in list(_owned_files.items()):
        del _owned_files[path]
        try:
            if _identity(os.lstat(path)) == identity:
                os.unlink(path)
        except OSError:
            pass  # already gone, or its directory: nothing of ours to remove


def disown_socket_files() -> list[str]:
    """Forget the socket files this process bound (it handed them to another): returns them."""
    paths = sorted(_owned_files)
    _owned_files.clear()
    return paths
