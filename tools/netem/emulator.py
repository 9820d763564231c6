"""LinkEmulator: the Python API. Starts the forwarder process and talks to it."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import control, netns
from .profile import LinkProfile

REPO_ROOT = Path(__file__).resolve().parents[2]


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with this checkout importable (for helpers run inside a namespace)."""
    env = dict(os.environ)
    pp = env.get("PYTHONPATH", "")
    parts = [str(REPO_ROOT)] + ([pp] if pp else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    if extra:
        env.update(extra)
    return env


class LinkEmulator:
    """Two network namespaces joined by an emulated link.

    >>> with LinkEmulator(LinkProfile(rtt_ms=50, loss=0.01, rate_mbit=100)) as link:
    ...     srv = link.run_in_b(["python3", "-m", "http.server", "-b", link.b_addr, "8000"])
    ...     link.run_in("a", ["curl", f"http://{link.b_addr}:8000/"])

    Side "a" is 10.77.0.1 / fd77::1 in namespace ``<prefix>-a``, side "b" is 10.77.0.2 / fd77::2
    in ``<prefix>-b``. Everything is removed on exit (also on exceptions, SIGINT and SIGTERM;
    the forwarder also cleans up if this process is killed). Needs root.

    The forwarder runs as a separate process (its own core, its own GIL), SCHED_FIFO priority 10
    when ``realtime`` (default unless PTPROXY_NETEM_REALTIME=0; falls back to ``nice`` where
    SCHED_FIFO is not permitted), with 1 us timer slack: on a busy 2-core
    machine that keeps the scheduling error of deliveries far below 1 ms (see ``stats()["sched"]``).
    """

    a_addr = netns.A_ADDR
    b_addr = netns.B_ADDR
    a_addr6 = netns.A_ADDR6
    b_addr6 = netns.B_ADDR6

    def __init__(
        self,
        profile: LinkProfile | None = None,
        prefix: str = "ptp",
        *,
        nice: int = -10,
        realtime: bool | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        if not prefix or "/" in prefix or len(prefix) > 40:
            raise ValueError(f"bad prefix {prefix!r}")
        self.profile = profile or LinkProfile()
        self.prefix = prefix
        self.ns_a, self.ns_b = netns.ns_names(prefix)
        self.control_path = netns.control_path(prefix)
        self.nice = nice
        if realtime is None:  # PTPROXY_NETEM_REALTIME=0 turns it off for a whole run
            realtime = os.environ.get("PTPROXY_NETEM_REALTIME", "1") not in ("0", "no", "false")
        self.realtime = realtime
        self.priority = ""
        self.ready_timeout = ready_timeout
        self.final_stats: dict[str, Any] | None = None
        self.seed: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._children: list[subprocess.Popen[Any]] = []
        self._old_sigterm: Any = None
        self._closed = True

    available = staticmethod(netns.available)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LinkEmulator:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._closed = False
        self._install_sigterm()
        atexit.register(self.close)
        try:
            self._spawn()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self) -> None:
        cmd = [
            sys.executable, "-m", "tools.netem", "_forwarder",
            "--prefix", self.prefix,
            "--profile", json.dumps(self.profile.to_dict()),
            "--parent-pid", str(os.getpid()),
            "--nice", str(self.nice),
            "--rt-prio", "10" if self.realtime else "0",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=python_env(),
            cwd=str(REPO_ROOT),
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we tear down in order
        )
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"link forwarder not ready after {self.ready_timeout:.0f} s")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
        try:
            msg = json.loads(buf.split(b"\n", 1)[0]) if buf.strip() else {}
        except ValueError:
            msg = {"error": buf.decode(errors="replace")}
        if not msg.get("ready"):
            rc = self._proc.wait(timeout=10)
            raise RuntimeError(
                f"link forwarder failed (exit {rc}): {msg.get('error', 'no ready message')}"
            )
        self.seed = msg.get("seed")
        self.priority = msg.get("priority", "")

    def close(self) -> None:
        """Stop child processes and the forwarder, delete the namespaces. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        try:
            self._stop_children()
            proc = self._proc
            if proc is not None:
                if proc.poll() is None:
                    try:
                        reply = control.request(self.control_path, {"cmd": "quit"}, timeout=5.0)
                        self.final_stats = reply.get("stats")
                    except (OSError, ValueError):
                        proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=5)
                if proc.stdout is not None:
                    proc.stdout.close()
            # belt and braces (the forwarder normally did all of this)
            netns.cleanup(self.prefix, kill_forwarder=False)
        finally:
            self._restore_sigterm()

    def __enter__(self) -> LinkEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

            def on_term(signum: int, frame: Any) -> None:
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _stop_children(self) -> None:
        live = [p for p in self._children if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        deadline = time.monotonic() + 3.0
        for p in self._children:
            try:
                p.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for p in self._children:
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        self._children.clear()

    # -- processes in the namespaces ------------------------------------------------------
    def ns(self, side: str) -> str:
        if side in ("a", "A"):
            return self.ns_a
        if side in ("b", "B"):
            return self.ns_b
        raise ValueError(f"side must be 'a' or 'b', not {side!r}")

    def addr(self, side: str, v6: bool = False) -> str:
        self.ns(side)
        if side.lower() == "a":
            return self.a_addr6 if v6 else self.a_addr
        return self.b_addr6 if v6 else self.b_addr

    def cmd_prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(side)]

    def run_in(self, side: str, cmd: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside namespace ``side``; it is stopped (if still running) on close."""
        p = subprocess.Popen(self.cmd_prefix(side) + list(cmd), **popen_kw)
        self._children.append(p)
        return p

    def run_in_a(self, cmd: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        return self.run_in("a", cmd, **popen_kw)

    def run_in_b(self, cmd: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        return self.run_in("b", cmd, **popen_kw)

    def python_in(self, side: str, args: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``python <args>`` inside namespace ``side`` with this checkout importable."""
        popen_kw.setdefault("env", python_env())
        popen_kw.setdefault("cwd", str(REPO_ROOT))
        return self.run_in(side, [sys.executable, *args], **popen_kw)

    # -- control -----------------------------------------------------------------------------
    def request(self, req: dict[str, Any] | str, timeout: float = 5.0) -> dict[str, Any]:
        reply = control.request(self.control_path, req, timeout=timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"forwarder refused {req!r}: {reply.get('error')}")
        return reply

    def stats(self) -> dict[str, Any]:
        """Counters per direction (``a_to_b``, ``b_to_a``), parameters, scheduling accuracy."""
        stats: dict[str, Any] = self.request({"cmd": "stats"})["stats"]
        return stats

    def reset_stats(self) -> None:
        self.request({"cmd": "reset"})

    def set(self, direction: str = "both", **params: Any) -> dict[str, Any]:
        """Change the link at runtime: ``loss``, ``rtt_ms``, ``delay_ms`` (one way), ``jitter_ms``,
        ``rate_mbit``, ``queue_packets``, ``queue_bytes``, ``loss_burst``, ``reorder``,
        ``jitter_dist`` (or raw DirectionParams fields). ``direction``: both, a_to_b, b_to_a."""
        return self.request({"cmd": "set", "params": params, "direction": direction})["params"]

    def blackout(self, seconds: float, direction: str = "both") -> tuple[float, float]:
        """Drop every packet entering the link for ``seconds`` (0 ends a blackout now).

        Returns the forwarder's (start, end) in ``time.monotonic()`` seconds, which every
        process on the machine shares."""
        r = self.request({"cmd": "blackout", "seconds": seconds, "direction": direction})
        return r["start"], r["until"]

    def kernel_stats(self) -> dict[str, dict[str, Any]]:
        """The kernel's counters of both TUN devices (``ip -s link``), e.g. TX drops when the
        forwarder did not read fast enough."""
        out: dict[str, dict[str, Any]] = {}
        for side, dev in (("a", netns.TUN_A), ("b", netns.TUN_B)):
            r = netns.ip("-n", self.ns(side), "-s", "-j", "link", "show", "dev", dev)
            info = json.loads(r.stdout)[0]
            out[side] = info.get("stats64", info.get("stats", {}))
        return out
