"""SIGUSR2: restart without refusing a connection, by handing the listening sockets to a new process.

The old process (:class:`HandOff`) starts the same command line again with ``PTPROXY_HANDOFF`` set
to one end of a UNIX socket pair, and sends every listening socket over it (``SCM_RIGHTS``, names
in a JSON header: :mod:`ptproxy.ops.handoff_msg`). The new process (:func:`from_environment`)
adopts them into :mod:`ptproxy.sockets`, so its listeners take them instead of binding, starts, and
reports ready. Only then does the old process close its copies and drain: connections waiting in a
listener's backlog are accepted by the new process from the same socket, so none is refused.

The server end's UDP socket is shared the same way, but the old process still holds the client
ends' QUIC sessions: until they have moved (GOAWAY, then each client end dials a new session) it
alone reads the socket and forwards what is not for its connections over a UNIX datagram pair;
the new process (:class:`Predecessor`) handles those as if read, and reads the socket itself once
the old one says ``takeover`` (or is gone).

If the new process exits, or is not ready within the timeout, the old one kills it (if needed),
logs one error line and goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from ptproxy import sockets as registry
from ptproxy.ops import handoff_msg as hm

__all__ = ["ENV", "HandOff", "Predecessor", "Successor", "from_environment", "receive_sockets", "send_sockets"]

logger = logging.getLogger("ptproxy")

ENV = "PTPROXY_HANDOFF"
READY_TIMEOUT = 30.0  # s for the new process to report ready
FIRST_DIAL_WAIT = 15.0  # s a new client end waits for its first session before it listens
RECEIVE_TIMEOUT = 10.0  # s for the new process to get the sockets (they are sent before it starts)
EXIT_WAIT = 5.0  # s to collect the exit status of a new process that closed its end
# Forwarded datagrams read per wake-up: the new process's own work must not starve behind them.
FORWARD_BATCH = 256
FORWARD_BUFFER = 1 << 20  # bytes of forwarded datagrams the pair may hold (a burst of Initials)


# -- passing sockets -------------------------------------------------------------------------------


def send_sockets(channel: socket.socket, socks: Mapping[str, socket.socket]) -> None:
    """Send ``socks`` (name → socket) as one message: names in the header, descriptors along."""
    names = list(socks)
    socket.send_fds(channel, [hm.encode_sockets(names)], [socks[n].fileno() for n in names])


def receive_sockets(channel: socket.socket, timeout: float) -> dict[str, socket.socket]:
    """The sockets of a :func:`send_sockets` message, by name. Raises HandoffError."""
    channel.settimeout(timeout)
    try:
        data, fds, flags, _ = socket.recv_fds(channel, hm.MAX_MESSAGE, hm.MAX_FDS)
    except TimeoutError:
        raise hm.HandoffError(f"hand-off: no sockets from the old process within {timeout:g}s") from None
    except OSError as exc:
        raise hm.HandoffError(f"hand-off: reading the sockets from the old process: {exc}") from None
    try:
        if flags & socket.MSG_CTRUNC:
            raise hm.HandoffError("hand-off: the old process's sockets arrived truncated (MSG_CTRUNC)")
        if not data:
            raise hm.HandoffError("hand-off: the old process closed the channel before sending its sockets")
        message = hm.decode(data, len(fds))
        if not isinstance(message, hm.Sockets):
            raise hm.HandoffError(f"hand-off: expected the sockets, got {type(message).__name__}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return {name: socket.socket(fileno=fd) for name, fd in zip(message.names, fds, strict=True)}


# -- the old process -------------------------------------------------------------------------------


class Successor:
    """The new process after it reported ready: what the old one still tells or forwards it."""

    def __init__(self, pid: int, control: socket.socket, forward: socket.socket | None) -> None:
        self.pid = pid
        self._control = control
        self._forward = forward
        self.forwarded = 0
        self.dropped = 0  # the pair was full: lost, as on the network (QUIC resends)

    def forward_datagram(self, data: bytes, addr: Any) -> None:
        """Pass a UDP datagram that is not for one of our connections to the new process."""
        if self._forward is None:
            return
        try:
            self._forward.send(hm.pack_datagram(addr, data))
            self.forwarded += 1
        except BlockingIOError:
            self.dropped += 1
        except OSError as exc:  # the new process is gone: nothing to forward to any more
            logger.error("hand-off: forwarding datagrams to process %d failed: %s; dropping them", self.pid, exc)
            self._forward.close()
            self._forward = None

    def take_over(self) -> None:
        """We no longer read the shared UDP socket (closed it): the new process reads it now."""
        try:
            self._control.send(hm.encode_takeover())
        except OSError as exc:  # gone: its Predecessor takes over on EOF anyway
            logger.debug("hand-off: telling process %d to take over failed: %s", self.pid, exc)

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        self._control.close()


class HandOff:
    """One attempt to start a new process with our sockets; :meth:`run` says whether it took."""

    def __init__(self, argv: list[str] | None = None, *, ready_timeout: float = READY_TIMEOUT) -> None:
        # The command line as originally given (interpreter options and ``-m ptproxy`` included).
        self.argv = argv if argv is not None else [sys.executable, *sys.orig_argv[1:]]
        self.ready_timeout = ready_timeout
        self.pid: int | None = None

    async def run(self, socks: Mapping[str, socket.socket], *, forward: bool) -> Successor | None:
        """Start the new process, hand it ``socks``; its Successor once ready, else None (logged)."""
        control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours, theirs = _forward_pair() if forward else (None, None)
        try:
            passed = dict(socks)
            if theirs is not None:
                passed[hm.FORWARD_NAME] = theirs
            send_sockets(control, passed)  # buffered in the pair until the new process reads it
            proc = self._spawn(child_control)
        except (OSError, hm.HandoffError) as exc:
            logger.error("hand-off failed, still serving: starting the new process: %s", exc)
            for sock in (control, ours):
                if sock is not None:
                    sock.close()
            return None
        finally:
            child_control.close()  # the new process has its own copy: EOF here means it exited
            if theirs is not None:
                theirs.close()
        self.pid = proc.pid
        logger.info("SIGUSR2: started process %d with our listening sockets; waiting for it to be ready", proc.pid)
        try:
            failure = await self._wait_ready(control, proc)
        except BaseException:  # cancelled (we are shutting down): no orphan holding our sockets
            _kill(proc)
            control.close()
            if ours is not None:
                ours.close()
            raise
        if failure is not None:
            logger.error("hand-off to process %d failed, still serving: %s", proc.pid, failure)
            control.close()
            if ours is not None:
                ours.close()
            return None
        return Successor(proc.pid, control, ours)

    def _spawn(self, child_control: socket.socket) -> subprocess.Popen[bytes]:
        env = _child_environment(os.environ, child_control.fileno())
        # stdout/stderr inherited: the new process logs where we do (the journal, a file).
        # Popen, not asyncio's subprocess: closing that transport at our exit would kill the child.
        return subprocess.Popen(self.argv, pass_fds=(child_control.fileno(),), env=env, stdin=subprocess.DEVNULL)

    async def _wait_ready(self, control: socket.socket, proc: subprocess.Popen[bytes]) -> str | None:
        """None once the new process reported ready; else why not (and it is no longer running)."""
        loop = asyncio.get_running_loop()
        control.setblocking(False)
        try:
            data = await asyncio.wait_for(loop.sock_recv(control, hm.MAX_MESSAGE), self.ready_timeout)
        except TimeoutError:
            _kill(proc)
            return f"not ready within {self.ready_timeout:g}s (killed it)"
        except ConnectionResetError:
            data = b""  # it exited without reading our sockets (it failed before): as an EOF
        except OSError as exc:
            _kill(proc)
            return f"reading its report: {exc} (killed it)"
        if not data:  # it closed its end: it exited (or is exiting)
            status = await _exit_status(proc)
            return f"it exited before it was ready ({status}; its own error is logged above)"
        try:
            message = hm.decode(data)
        except hm.HandoffError as exc:
            _kill(proc)
            return f"{exc} (killed it)"
        if not isinstance(message, hm.Ready) or message.pid != proc.pid:
            _kill(proc)
            return f"unexpected report {message!r} (killed it)"
        return None


def _forward_pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (ours, theirs):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FORWARD_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FORWARD_BUFFER)
        except OSError:
            pass  # the defaults only mean more drops under a burst
    ours.setblocking(False)
    return ours, theirs


def _child_environment(environ: Mapping[str, str], control_fd: int) -> dict[str, str]:
    env = dict(environ)
    env[ENV] = str(control_fd)
    # WATCHDOG_PID names us: the new process would never ping once it is the unit's main process.
    env.pop("WATCHDOG_PID", None)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):  # ours, not the child's
        env.pop(name, None)
    return env


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(EXIT_WAIT)  # SIGKILL is not ignored: this is short
        except subprocess.TimeoutExpired:
            pass


async def _exit_status(proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + EXIT_WAIT
    while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - no child watcher
        await asyncio.sleep(0.05)
    code = proc.poll()
    if code is None:
        _kill(proc)
        return "closed the channel but did not exit; killed it"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}"


# -- the new process -------------------------------------------------------------------------------


class Predecessor:
    """The new process's side: report ready; server end: follow the old process, then take over."""

    def __init__(self, control: socket.socket, forward: socket.socket | None) -> None:
        self._control = control
        self.forward = forward
        self._deliver: Callable[[bytes, Any], None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self.ppid = os.getppid()

    def report_ready(self) -> None:
        """Tell the old process we serve; it then stops accepting and drains."""
        try:
            self._control.setblocking(True)
            self._control.send(hm.encode_ready(os.getpid()))
        except OSError as exc:
            # The old process is gone: its sockets are ours alone already.
            logger.warning("hand-off: reporting ready to process %d failed: %s", self.ppid, exc)
        if self.forward is None:
            self._control.close()  # nothing more to hear (client end)

    def follow(self, deliver: Callable[[bytes, Any], None], take_over: Callable[[], None]) -> None:
        """Server end: feed forwarded datagrams to ``deliver`` until the old process says
        ``takeover`` (or exits), then call ``take_over``."""
        assert self.forward is not None
        self._deliver = deliver
        loop = asyncio.get_running_loop()
        self.forward.setblocking(False)
        loop.add_reader(self.forward.fileno(), self._read_forwarded)
        self._waiter = loop.create_task(self._wait_takeover(take_over))

    def _read_forwarded(self, limit: int = FORWARD_BATCH) -> None:
        forward, deliver = self.forward, self._deliver
        assert forward is not None and deliver is not None
        for _ in range(limit):
            try:
                message = forward.recv(hm.MAX_MESSAGE + 512)
            except BlockingIOError:
                return
            except OSError as exc:
                logger.debug("hand-off: reading forwarded datagrams: %s", exc)
                return
            try:
                addr, data = hm.unpack_datagram(message)
            except hm.HandoffError as exc:
                logger.warning("%s", exc)
                continue
            deliver(data, addr)

    async def _wait_takeover(self, take_over: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self._control.setblocking(False)
        try:
            data = await loop.sock_recv(self._control, hm.MAX_MESSAGE)
        except OSError as exc:
            data = b""
            logger.debug("hand-off: control channel: %s", exc)
        if data:
            try:
                hm.decode(data)
            except hm.HandoffError as exc:
                logger.warning("%s; taking over the QUIC socket anyway", exc)
            how = "it stopped reading"
        else:
            how = "it is gone"
        self._stop_following()
        take_over()
        logger.info("took over the QUIC socket from process %d (%s)", self.ppid, how)

    def _stop_following(self) -> None:
        if self.forward is not None:
            self._read_forwarded(limit=1 << 30)  # what it forwarded before it stopped comes first
            asyncio.get_running_loop().remove_reader(self.forward.fileno())
            self.forward.close()
            self.forward = None
        self._control.close()

    async def close(self) -> None:
        """Shutting down while still following: stop waiting (the socket is closed anyway)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()
            await asyncio.gather(self._waiter, return_exceptions=True)
            if self.forward is not None:
                asyncio.get_running_loop().remove_reader(self.forward.fileno())
                self.forward.close()
                self.forward = None
            self._control.close()


def from_environment(environ: MutableMapping[str, str] | None = None) -> Predecessor | None:
    """In a process started by a hand-off: take the sockets passed to us into the registry.

    None when not started by one. Raises HandoffError (the start fails with one line, and the old
    process, seeing us exit, keeps serving)."""
    env = os.environ if environ is None else environ
    value = env.pop(ENV, None)  # a later hand-off of ours sets its own
    if value is None:
        return None
    if not value.isdigit():
        raise hm.HandoffError(f"{ENV}: expected a file descriptor number, got {value!r}")
    try:
        control = socket.socket(fileno=int(value))
    except OSError as exc:
        raise hm.HandoffError(f"{ENV}: fd {value} is not a socket: {exc.strerror}") from None
    control.set_inheritable(False)
    try:
        socks = receive_sockets(control, RECEIVE_TIMEOUT)
    except BaseException:
        control.close()
        raise
    forward = socks.pop(hm.FORWARD_NAME, None)
    for name, sock in socks.items():
        # Its UNIX socket file is ours to remove at exit now (the old process disowns it).
        registry.adopt(name, sock, owns_file=True)
    logger.info("hand-off from process %d: took %s", os.getppid(), ", ".join(sorted(socks)) or "no sockets")
    return Predecessor(control, forward)
