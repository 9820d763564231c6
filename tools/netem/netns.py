"""Namespaces, TUN devices and cleanup (Linux, root)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29

NETNS_DIR = Path("/run/netns")
A_ADDR, B_ADDR = "10.77.0.1", "10.77.0.2"
A_ADDR6, B_ADDR6 = "fd77::1", "fd77::2"
TUN_A, TUN_B = "tun-a", "tun-b"

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def ns_names(prefix: str) -> tuple[str, str]:
    return f"{prefix}-a", f"{prefix}-b"


def run_dir() -> Path:
    """Where control sockets and pid files live (per prefix)."""
    base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    d = base / "ptproxy-netem"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def control_path(prefix: str) -> Path:
    return run_dir() / f"{prefix}.sock"


def pid_path(prefix: str) -> Path:
    return run_dir() / f"{prefix}.pid"


def ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def ns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_namespaces() -> list[str]:
    r = ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def setns_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(fd)
    finally:
        os.close(fd)


def setns_fd(fd: int) -> None:
    if libc().setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def prctl(option: int, arg: int) -> None:
    if libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl({option}): {os.strerror(e)}")


def open_tun(name: str) -> int:
    """Open a non-persistent layer-3 TUN (no packet-info header) in the current net namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_tun_in(ns: str, name: str) -> int:
    """Create the TUN directly inside namespace ``ns`` (setns there and back)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_path(NETNS_DIR / ns)
        try:
            return open_tun(name)
        finally:
            setns_fd(home)
    finally:
        os.close(home)


def write_sysctl_in(ns: str, settings: dict[str, str]) -> None:
    """Write /proc/sys/net/... values as seen from inside ``ns`` (best effort)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_path(NETNS_DIR / ns)
        try:
            for key, val in settings.items():
                p = Path("/proc/sys") / key.replace(".", "/")
                with contextlib.suppress(OSError):
                    p.write_text(val)
        finally:
            setns_fd(home)
    finally:
        os.close(home)


def configure_side(ns: str, dev: str, addr: str, addr6: str | None, mtu: int) -> None:
    ip("-n", ns, "link", "set", "lo", "up")
    quiet = ("accept_ra", "router_solicitations", "dad_transmits")
    sysctls = {f"net.ipv6.conf.{dev}.{k}": "0" for k in quiet}
    if addr6 is None:
        sysctls[f"net.ipv6.conf.{dev}.disable_ipv6"] = "1"
    write_sysctl_in(ns, sysctls)
    ip("-n", ns, "link", "set", "dev", dev, "mtu", str(mtu), "txqueuelen", "1000")
    if addr6 is not None:
        # no random link-local (and no router solicitations from it): only our static address
        ip("-n", ns, "link", "set", "dev", dev, "addrgenmode", "none", check=False)
    ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
    if addr6 is not None:
        ip("-n", ns, "-6", "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
    ip("-n", ns, "link", "set", "dev", dev, "up")


def ns_pids(ns: str) -> list[int]:
    r = ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split() if x.strip().isdigit()]


def kill_ns_processes(ns: str, grace: float = 1.0) -> int:
    """SIGTERM, then SIGKILL, every process living in namespace ``ns``. Returns how many."""
    pids = [p for p in ns_pids(ns) if p != os.getpid()]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.02)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of someone else is "alive" for kill(0); check /proc state
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
        return st.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_forwarder(pid: int, prefix: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"tools.netem" in cmd and b"_forwarder" in cmd and prefix.encode() in b" ".join(cmd)


def delete_namespace(ns: str) -> None:
    if not ns_exists(ns):
        return
    kill_ns_processes(ns)
    r = ip("netns", "del", ns, check=False)
    if r.returncode != 0 and ns_exists(ns):
        raise RuntimeError(f"ip netns del {ns}: {r.stderr.strip()}")


def cleanup(prefix: str, *, kill_forwarder: bool = True) -> list[str]:
    """Remove what a previous run with ``prefix`` may have left: forwarder, namespaces, files.

    Returns a list of what was removed (for messages).
    """
    removed: list[str] = []
    pp = pid_path(prefix)
    if kill_forwarder and pp.exists():
        try:
            pid = int(json.loads(pp.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pid = 0
        if pid and pid != os.getpid() and _is_forwarder(pid, prefix):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 3.0
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            removed.append(f"forwarder pid {pid}")
    for ns in ns_names(prefix):
        if ns_exists(ns):
            delete_namespace(ns)
            removed.append(f"netns {ns}")
    for p in (control_path(prefix), pp):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return removed


def available() -> tuple[bool, str]:
    """Can a link emulator run here? ``(True, "ok")`` or ``(False, reason)``."""
    if not hasattr(os, "geteuid") or os.uname().sysname != "Linux":
        return False, "needs Linux"
    if os.geteuid() != 0:
        return False, "needs root (network namespaces and TUN devices)"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' command not found"
    if not os.path.exists("/dev/net/tun"):
        return False, "/dev/net/tun does not exist (no TUN support)"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as e:
        return False, f"cannot open /dev/net/tun: {e.strerror}"
    probe = f"ptpnetemprobe{os.getpid()}"
    try:
        r = ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            return False, f"'ip netns add' failed: {r.stderr.strip()}"
        try:
            fd = open_tun_in(probe, "tunprobe")
            os.close(fd)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOENT):
                return False, f"cannot create a TUN device inside a namespace: {e}"
            raise
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"namespace probe failed: {e}"
    finally:
        ip("netns", "del", probe, check=False)
    return True, "ok"
