"""Processes of a benchmark run: each in its own process group, all torn down at the end.

Teardown runs on normal exit, exceptions, SIGINT/SIGTERM/SIGHUP (turned into SystemExit so
``finally`` blocks run) and at interpreter exit. CPU and memory come from /proc.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid


class ProcessGroups:
    """Starts processes (each a new session, so a process group of its own) and stops them all."""

    def __init__(self) -> None:
        self.procs: list[Managed] = []
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        atexit.register(self.stop_all)

        def on_signal(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        # SIGINT already raises KeyboardInterrupt, which unwinds through the same finally blocks.

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        self.install()
        log_file = open(log, "ab")
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
        m = Managed(name, proc, log, log_file)
        self.procs.append(m)
        return m

    def stop(self, m: Managed, timeout: float = 5.0) -> None:
        if m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(m.proc.pid, signal.SIGTERM)
            try:
                m.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left in the group (nginx workers, children) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(m.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            m.proc.wait(timeout=5)
        m.log_file.close()
        if m in self.procs:
            self.procs.remove(m)

    def stop_all(self) -> None:
        for m in reversed(list(self.procs)):
            self.stop(m)


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx master + workers, ip-netns-exec'd commands)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, in seconds."""
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def peak_rss_kib(pid: int) -> int:
    """Sum of VmHWM over ``pid`` and its descendants, KiB."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def listening(pid: int, port: int, udp: bool = False) -> bool:
    """Is ``port`` bound in the network namespace of ``pid`` (TCP LISTEN, or UDP bound)?"""
    hexport = f":{port:04X}"
    for name in ("udp", "udp6") if udp else ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[1].endswith(hexport) and (udp or parts[3] == "0A"):
                return True
    return False


def wait_until(pred: Any, timeout: float, what: str, proc: Managed | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}) before {what}; log: {proc.log}")
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
