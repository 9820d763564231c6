"""Load generators: wrk, ab and the Python client, run (pinned, in namespace a when emulated) as
subprocesses; their output parsed into flat metric dicts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.harness.procs import REPO_ROOT, python_env
from benchmarks.harness.stats import latency_summary

from .machine import CpuPlan
from .places import Place

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class Loadgen:
    place: Place
    plan: CpuPlan
    threads: int

    def _cmd(self, cmd: list[str]) -> list[str]:
        return self.place.prefix("a") + self.plan.prefix("loadgen") + cmd

    def _run(self, cmd: list[str], timeout: float) -> str:
        r = subprocess.run(self._cmd(cmd), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, start_new_session=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        return r.stdout

    def wrk(self, url: str, conns: int, seconds: float) -> dict[str, Any]:
        t = max(1, min(self.threads, conns))
        out = self._run(["wrk", "--latency", f"-t{t}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s", url],
                        timeout=seconds + 60)
        return parse_wrk(out)

    def ab(self, url: str, conns: int, seconds: float) -> dict[str, Any]:
        out = self._run(["ab", "-k", "-r", "-q", "-s", "10", "-c", str(conns), "-t", f"{seconds:g}", "-n", "100000000", url],
                        timeout=seconds + 60)
        return parse_ab(out)

    def client(self, args: list[str], timeout: float = 600) -> dict[str, Any]:
        cmd = self._cmd([sys.executable, "-m", "benchmarks.e2e.client", *args])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=python_env(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            res: dict[str, Any] = json.loads(r.stdout)
        except ValueError:
            raise RuntimeError(f"client failed ({r.returncode}): {r.stderr.strip()[-500:]}") from None
        if "error" in res:
            raise RuntimeError(f"client: {res['error']}")
        return res


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"bad duration {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"unparseable wrk output: {out[-500:]}")
    res["req_per_s"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["duration_s"] = _ms(m.group(2)) / 1000
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", out, re.MULTILINE)
        if m:
            res[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+\w+)", out)
    if m:
        res["max_ms"] = _ms(m.group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    res["errors"] = errors
    return res


def parse_ab(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"unparseable ab output: {out[-500:]}")
    res["req_per_s"] = float(m.group(1))
    m = re.search(r"Complete requests:\s+(\d+)", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Time taken for tests:\s+([\d.]+)", out)
    if m:
        res["duration_s"] = float(m.group(1))
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\d+)", out, re.MULTILINE)
        if m:
            res[f"p{pct}_ms"] = float(m.group(1))
    m = re.search(r"^\s+100%\s+(\d+)", out, re.MULTILINE)
    if m:
        res["max_ms"] = float(m.group(1))
    errors = 0
    for pat in (r"Failed requests:\s+(\d+)", r"Non-2xx responses:\s+(\d+)"):
        m = re.search(pat, out)
        if m:
            errors += int(m.group(1))
    res["errors"] = errors
    return res


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latency samples in ms (:func:`benchmarks.harness.stats.percentile`)."""
    summ = latency_summary(values)
    return {f"{k}_ms": summ[k] for k in ("p50", "p90", "p99", "max", "mean")} if values else {}
