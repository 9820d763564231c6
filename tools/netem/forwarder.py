"""The forwarder process: owns the namespaces and TUN devices and moves packets between them.

Run as ``python -m tools.netem _forwarder --prefix P --profile JSON`` (LinkEmulator does).
It prints one JSON line on stdout when ready (or ``{"error": ...}``), serves the control socket,
and tears everything down when it gets ``quit``, SIGTERM/SIGINT/SIGHUP, or its parent dies
(checked every 0.25 s).

The loop is a single thread: ``select()`` (microsecond timeouts, unlike epoll/poll's
milliseconds) on both TUN fds and the control sockets, with the timeout set to the next packet's
due time. Reads are batched (up to ``BATCH`` packets per fd per wakeup).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from . import netns
from .control import DIRECTIONS, parse_request
from .model import PARAM_TYPES, Direction, DirectionParams
from .profile import FRIENDLY_KEYS, LinkProfile

BATCH = 32
EARLY = 30e-6  # deliver packets due within this much of now (saves a wakeup)
IDLE_TIMEOUT = 0.5
PARENT_CHECK = 0.25  # s between checks that the owning process is still alive
# lateness histogram upper bounds, microseconds
LATE_BUCKETS_US = (50, 100, 250, 500, 1000, 2000, 5000, 10000, math.inf)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


class Forwarder:
    def __init__(self, prefix: str, profile: LinkProfile, parent_pid: int = 0) -> None:
        self.prefix = prefix
        self.parent_pid = parent_pid
        self.profile = profile
        self.ns_a, self.ns_b = netns.ns_names(prefix)
        self.fa = self.fb = -1
        self.ctl: socket.socket | None = None
        self.clients: dict[socket.socket, bytes] = {}
        seed = profile.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        self.seed = seed
        self.dirs = {
            "a_to_b": Direction(profile.direction("a_to_b"), seed),
            "b_to_a": Direction(profile.direction("b_to_a"), seed + 1),
        }
        self.started = time.monotonic()
        self.stop_reason = ""
        self.priority = "default"
        self._created_ns: list[str] = []
        self._reset_sched()

    def _reset_sched(self) -> None:
        self.late_n = 0
        self.late_sum = 0.0
        self.late_max = 0.0
        self.late_hist = [0] * len(LATE_BUCKETS_US)
        self.wakeups = 0
        self.reads = 0
        self.t_reset = time.monotonic()
        self.cpu_reset = self._cpu()

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    # -- setup / teardown ------------------------------------------------------------------
    def setup(self) -> None:
        netns.cleanup(self.prefix)
        for ns in (self.ns_a, self.ns_b):
            netns.ip("netns", "add", ns)
            self._created_ns.append(ns)
        self.fa = netns.open_tun_in(self.ns_a, netns.TUN_A)
        self.fb = netns.open_tun_in(self.ns_b, netns.TUN_B)
        v6 = self.profile.ipv6
        netns.configure_side(
            self.ns_a, netns.TUN_A, netns.A_ADDR, netns.A_ADDR6 if v6 else None, self.profile.mtu
        )
        netns.configure_side(
            self.ns_b, netns.TUN_B, netns.B_ADDR, netns.B_ADDR6 if v6 else None, self.profile.mtu
        )
        path = netns.control_path(self.prefix)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(str(path))
        os.chmod(path, 0o600)
        self.ctl.listen(16)
        self.ctl.setblocking(False)
        netns.pid_path(self.prefix).write_text(
            json.dumps({"pid": os.getpid(), "ns": [self.ns_a, self.ns_b], "control": str(path)})
        )

    def teardown(self) -> None:
        for fd in (self.fa, self.fb):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fa = self.fb = -1
        for c in list(self.clients):
            c.close()
        self.clients.clear()
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        for ns in self._created_ns:
            with contextlib.suppress(Exception):
                netns.delete_namespace(ns)
        for p in (netns.control_path(self.prefix), netns.pid_path(self.prefix)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # -- stats / control -------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = max(now - self.t_reset, 1e-9)
        cpu = self._cpu() - self.cpu_reset
        hist = {}
        lo = 0.0
        for ub, n in zip(LATE_BUCKETS_US, self.late_hist):
            label = f"{lo:g}-{ub:g}us" if ub != math.inf else f">={lo:g}us"
            hist[label] = n
            lo = ub
        return {
            "uptime": now - self.started,
            "seed": self.seed,
            "priority": self.priority,
            "params": {k: d.params.to_dict() for k, d in self.dirs.items()},
            "a_to_b": self.dirs["a_to_b"].snapshot(now),
            "b_to_a": self.dirs["b_to_a"].snapshot(now),
            "sched": {
                "since_reset_s": elapsed,
                "deliveries": self.late_n,
                "late_mean_us": (self.late_sum / self.late_n * 1e6) if self.late_n else 0.0,
                "late_max_us": self.late_max * 1e6,
                "late_hist": hist,
                "wakeups": self.wakeups,
                "reads": self.reads,
                "cpu_s": cpu,
                "cpu_pct": 100.0 * cpu / elapsed,
            },
        }

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True}
        if cmd == "stats":
            return {"ok": True, "stats": self.stats()}
        if cmd == "reset":
            for d in self.dirs.values():
                d.reset_counters()
            self._reset_sched()
            return {"ok": True}
        if cmd == "set":
            return self._set(req.get("params") or {}, req.get("direction", "both"))
        if cmd == "blackout":
            secs = float(req.get("seconds", 0.0))
            now = time.monotonic()
            until = now + secs if secs > 0 else -math.inf
            for k in DIRECTIONS[req.get("direction", "both")]:
                self.dirs[k].blackout_until = until
            return {"ok": True, "start": now, "until": now + max(secs, 0.0)}
        if cmd == "quit":
            self.stop_reason = "quit"
            return {"ok": True, "stats": self.stats()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _set(self, params: dict[str, Any], direction: str) -> dict[str, Any]:
        per_dir: dict[str, dict[str, Any]] = {k: {} for k in self.dirs}
        for key, val in params.items():
            targets = DIRECTIONS.get(direction)
            if targets is None:
                raise ValueError(f"unknown direction {direction!r}")
            if "." in key:
                d, key = key.split(".", 1)
                if d not in DIRECTIONS:
                    raise ValueError(f"unknown direction {d!r} in {d}.{key}")
                targets = DIRECTIONS[d]
            if key in FRIENDLY_KEYS:
                field, conv = FRIENDLY_KEYS[key]
                value = conv(val)
                extra = {"rtt_hint": float(val) / 1000.0} if key == "rtt_ms" else {}
            elif key in PARAM_TYPES:
                field, extra = key, {}
                value = PARAM_TYPES[key](val) if isinstance(val, str) else val
                if key in ("delay", "jitter", "loss", "loss_burst", "rate", "rtt_hint"):
                    value = float(value)
            else:
                raise ValueError(f"unknown parameter {key!r}")
            for t in targets:
                per_dir[t][field] = value
                per_dir[t].update(extra)
        new: dict[str, DirectionParams] = {}
        for k, changes in per_dir.items():
            if changes:
                new[k] = dataclasses.replace(self.dirs[k].params, **changes)
                new[k].validate()
        for k, p in new.items():  # all validated: apply
            self.dirs[k].configure(p)
        return {"ok": True, "params": {k: d.params.to_dict() for k, d in self.dirs.items()}}

    def _control_readable(self, s: socket.socket) -> None:
        assert self.ctl is not None
        if s is self.ctl:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                c, _ = self.ctl.accept()
                c.settimeout(2.0)
                self.clients[c] = b""
            return
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.clients.pop(s, None)
            s.close()
            return
        buf = self.clients[s] + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                reply = self.handle(parse_request(line.decode()))
            except Exception as e:  # noqa: BLE001 - report any bad request to the client
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                s.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                self.clients.pop(s, None)
                s.close()
                return
        self.clients[s] = buf

    # -- the loop --------------------------------------------------------------------------
    def _deliver(self, now: float) -> None:
        """Write every packet due by ``now`` (+EARLY) to its output TUN; account lateness."""
        write = os.write
        mono = time.monotonic
        buckets = self._buckets
        hist = self.late_hist
        until = now + EARLY
        for d, ofd in self._out_for:
            if d.next_due() > until:
                continue
            c = d.c
            for due, pkt in d.pop_due(until):
                try:
                    write(ofd, pkt)
                except OSError:
                    c.write_errors += 1
                    continue
                d.delivered(pkt)
                late = mono() - due
                if late > 0.0:
                    self.late_sum += late
                    self.late_max = max(self.late_max, late)
                    i = 0
                    while late >= buckets[i]:
                        i += 1
                    hist[i] += 1
                else:
                    hist[0] += 1
                self.late_n += 1

    def run(self) -> None:
        fa, fb = self.fa, self.fb
        ab, ba = self.dirs["a_to_b"], self.dirs["b_to_a"]
        assert self.ctl is not None
        ctl = self.ctl
        rsize = max(self.profile.mtu, 1500) + 64
        read, mono, sel = os.read, time.monotonic, select.select
        self._buckets = [b / 1e6 for b in LATE_BUCKETS_US]
        self._out_for = ((ab, fb), (ba, fa))
        deliver = self._deliver
        clients = self.clients
        parent = self.parent_pid
        next_parent_check = 0.0
        while not self.stop_reason:
            now = mono()
            if parent and now >= next_parent_check:
                # our owner died (even by SIGKILL): we were reparented. Tear down.
                if os.getppid() != parent:
                    self.stop_reason = "parent exited"
                    break
                next_parent_check = now + PARENT_CHECK
            deliver(now)
            # -- wait for input or the next due time
            nd = min(ab.next_due(), ba.next_due())
            if nd == math.inf:
                timeout = IDLE_TIMEOUT
            else:
                timeout = nd - EARLY - mono()
                timeout = max(timeout, 0.0)
            rl = [fa, fb, ctl]
            if clients:
                rl.extend(clients)
            r = sel(rl, [], [], timeout)[0]
            self.wakeups += 1
            for f in r:
                if f == fa or f == fb:
                    d = ab if f == fa else ba
                    now = mono()
                    for _ in range(BATCH):
                        try:
                            pkt = read(f, rsize)
                        except OSError:  # EAGAIN: drained (or the device went away)
                            break
                        self.reads += 1
                        d.ingress(pkt, now)
                    deliver(mono())
                else:
                    self._control_readable(f)


def _set_priority(nice: int, rt_prio: int) -> str:
    """Timer slack 1 us; SCHED_FIFO ``rt_prio`` if > 0 (else / on failure: ``nice``)."""
    with contextlib.suppress(OSError):
        netns.prctl(netns.PR_SET_TIMERSLACK, 1000)  # 1 us instead of the default 50 us
    if rt_prio > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_prio))
            return f"SCHED_FIFO {rt_prio}"
        except OSError:
            pass
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
            return f"nice {nice}"
    return "default"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.netem _forwarder")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--profile", required=True, help="LinkProfile as JSON")
    ap.add_argument("--parent-pid", type=int, default=0)
    ap.add_argument("--nice", type=int, default=-10)
    ap.add_argument("--rt-prio", type=int, default=0, help="SCHED_FIFO priority (0: off)")
    args = ap.parse_args(argv)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    # Not PR_SET_PDEATHSIG: it fires when the *thread* that started us exits. The loop polls
    # getppid() instead, so an owner that dies (even by SIGKILL) still gets a clean teardown.
    if args.parent_pid and os.getppid() != args.parent_pid:
        return 1
    out = sys.stdout
    fw: Forwarder | None = None
    try:
        profile = LinkProfile.from_dict(json.loads(args.profile))
        fw = Forwarder(args.prefix, profile, args.parent_pid)
        fw.priority = _set_priority(args.nice, args.rt_prio)
        fw.setup()
        out.write(
            json.dumps(
                {
                    "ready": True,
                    "pid": os.getpid(),
                    "ns_a": fw.ns_a,
                    "ns_b": fw.ns_b,
                    "control": str(netns.control_path(args.prefix)),
                    "seed": fw.seed,
                    "priority": fw.priority,
                }
            )
            + "\n"
        )
        out.flush()
        fw.run()
        return 0
    except _Stop as e:
        if fw is not None:
            fw.stop_reason = fw.stop_reason or str(e)
        return 0
    except Exception as e:
        with contextlib.suppress(Exception):
            out.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
            out.flush()
        raise
    finally:
        if fw is not None:
            # a second signal during teardown must not leave half of it undone
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            fw.teardown()


if __name__ == "__main__":
    sys.exit(main())
