"""Runs the scenarios against the systems, per profile and repetition, and collects raw samples.

Order per profile: start the origin; then for each repetition, for each system (the order
rotates between repetitions so drift over time does not always favour the same system): start
the system, measure the first request after ready, warm up, run the scenarios (sampling the
proxy processes' CPU time around each), read peak RSS, verify, stop. A failure of one system is
recorded and the run goes on.
"""

from __future__ import annotations

import re
import socket
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.config import BODIES, UPLOAD_BYTES, origin_conf
from benchmarks.harness.ports import free_port
from benchmarks.harness.procs import (
    ProcessGroups,
    cpu_seconds,
    listening,
    loadavg,
    nginx_cmd,
    peak_rss_kib,
    wait_until,
)
from benchmarks.harness.stats import median
from ptproxy.ops.devcerts import make_demo_pki

from .load import Loadgen, percentiles
from .machine import CpuPlan
from .places import Place, PlaceContext
from .systems import SYSTEMS, Context, Endpoint, System

SCENARIOS = ["first_request", "wrk_small", "ab_small", "latency_seq", "download_10m", "upload_10m", "sweep", "launch"]


@dataclass
class Settings:
    systems: list[str]
    profiles: list[str]
    scenarios: list[str]
    repeat: int = 3
    duration: float = 10.0
    warmup: float = 3.0
    conns: int = 16
    latency_n: int = 2000
    transfer_n: int = 3
    sweep: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256])
    sweep_duration: float = 5.0
    proxy_cores: int = 1
    threads: int = 1
    quick: bool = False
    log: Callable[[str], None] = print


# samples[profile][system][scenario][metric] -> list of values (one per repetition)
Samples = dict[str, dict[str, dict[str, dict[str, list[float]]]]]


@dataclass
class RunData:
    samples: Samples = field(default_factory=dict)
    latency_raw: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # profile -> system
    info: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # profile -> system -> info
    errors: list[dict[str, str]] = field(default_factory=list)
    loadavg: list[dict[str, Any]] = field(default_factory=list)
    link_stats: dict[str, Any] = field(default_factory=dict)


def _add(data: RunData, prof: str, system: str, scenario: str, metrics: dict[str, Any]) -> None:
    sc = data.samples.setdefault(prof, {}).setdefault(system, {}).setdefault(scenario, {})
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            sc.setdefault(k, []).append(float(v))


class Measured:
    """CPU seconds of each proxy process over a block; per 10,000 requests or per GB."""

    def __init__(self, system: System) -> None:
        self.system = system

    def __enter__(self) -> Measured:
        self.t0 = {r: cpu_seconds(m.pid) for r, m in self.system.proxies.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {r: cpu_seconds(m.pid) - self.t0[r] for r, m in self.system.proxies.items()}

    def per(self, count: float, unit: str) -> dict[str, float]:
        if not self.used or count <= 0:
            return {}
        out = {f"cpu_s_per_{unit}_{r}": v / count for r, v in self.used.items()}
        out[f"cpu_s_per_{unit}_total"] = sum(self.used.values()) / count
        return out


class Packets:
    """QUIC packets (by kind) and datagrams of both ends over a block, from their /metrics;
    per request. Empty for systems without metrics endpoints (or when a scrape fails)."""

    def __init__(self, system: System) -> None:
        self.urls = system.metrics_urls

    def __enter__(self) -> Packets:
        self.t0 = _scrape(self.urls)
        return self

    def __exit__(self, *exc: object) -> None:
        t1 = _scrape(self.urls)
        self.delta = {k: t1[k] - self.t0.get(k, 0.0) for k in t1} if self.t0 and t1 else {}

    def per_request(self, requests: float) -> dict[str, float]:
        if not self.delta or requests <= 0:
            return {}
        out = {f"packets_per_req_{k}": v / requests for k, v in self.delta.items()}
        out["packets_per_req_total"] = sum(v for k, v in self.delta.items() if not k.startswith("datagrams_")) / requests
        return out


_SAMPLE = re.compile(r'^ptproxy_(packets_sent|datagrams)_total\{(?:kind|direction)="(\w+)"\} ([0-9.e+]+)$', re.M)


def _scrape(urls: list[str]) -> dict[str, float]:
    """Sum of ptproxy_packets_sent_total{kind} (key: kind) and ptproxy_datagrams_total{direction}
    (key: datagrams_<direction>) over ``urls``; {} if there are none or one fails."""
    totals: dict[str, float] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        for family, label, value in _SAMPLE.findall(text):
            key = label if family == "packets_sent" else f"datagrams_{label}"
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def _url(ep: Endpoint, path: str) -> str:
    return f"http://{ep.host}:{ep.port}{path}"


def run_system(s: Settings, place: Place, system: System, lg: Loadgen, data: RunData) -> None:
    prof, name = place.name, system.name
    ep = system.start()
    def add(sc, m):
        return _add(data, prof, name, sc, m)
    want = set(s.scenarios)
    probe = lg.client(["latency", ep.host, str(ep.port), "/hello", "--n", "1", "--probe"])
    if probe["errors"]:
        raise RuntimeError(f"first request through {name} failed")
    if "first_request" in want:
        add("first_request", {"ms": probe["latencies_ms"][0]})
    lg.wrk(_url(ep, "/hello"), s.conns, s.warmup)  # warm-up, not recorded
    for scenario in SCENARIOS[1:]:
        if scenario not in want or scenario == "launch":
            continue
        try:
            SCENARIO_FUNCS[scenario](s, place, system, lg, ep, data)
        except Exception as exc:  # noqa: BLE001 - one scenario failing does not end the system's run
            s.log(f"[{prof}] {name} {scenario} failed: {exc}")
            data.errors.append({"profile": prof, "system": name, "scenario": scenario,
                                "error": f"{type(exc).__name__}: {exc}"[:600]})
    if system.proxies:
        rss = {f"peak_rss_mib_{r}": peak_rss_kib(m.pid) / 1024 for r, m in system.proxies.items()}
        rss["peak_rss_mib_total"] = sum(rss.values())
        add("process", rss)
    if name == "caddy":  # a last probe so the log shows the protocol after the load too
        lg.client(["latency", ep.host, str(ep.port), "/hello", "--n", "1", "--probe"])
    system.check()
    if "launch" in want:  # last: it restarts the system
        try:
            sc_launch(s, place, system, lg, ep, data)
        except Exception as exc:  # noqa: BLE001 - recorded like any scenario
            s.log(f"[{prof}] {name} launch failed: {exc}")
            data.errors.append({"profile": prof, "system": name, "scenario": "launch",
                                "error": f"{type(exc).__name__}: {exc}"[:600]})



def sc_small(tool: str) -> Callable[..., None]:
    def f(s: Settings, place: Place, system: System, lg: Loadgen, ep: Endpoint, data: RunData) -> None:
        run = lg.wrk if tool == "wrk" else lg.ab
        with Packets(system) as packets, Measured(system) as cpu:
            r = run(_url(ep, "/hello"), s.conns, s.duration)
        n = r.get("requests", 0)
        _add(data, place.name, system.name, f"{tool}_small",
             {**r, **cpu.per(n / 10_000, "10k"), **packets.per_request(n)})
    return f


def sc_latency(s: Settings, place: Place, system: System, lg: Loadgen, ep: Endpoint, data: RunData) -> None:
    n = s.latency_n
    rtt = float(place.params.get("rtt_ms", 0.0))
    if rtt >= 10:
        n = max(50, min(n, int(15_000 / rtt)))  # ~15 s of round trips at most
    with Measured(system) as cpu:
        r = lg.client(["latency", ep.host, str(ep.port), "/hello", "--n", str(n), "--warmup", "50"])
    _add(data, place.name, system.name, "latency_seq",
         {**percentiles(r["latencies_ms"]), "errors": r["errors"], **cpu.per(n / 10_000, "10k")})
    data.latency_raw.setdefault(place.name, {}).setdefault(system.name, []).extend(r["latencies_ms"])


def sc_transfer(mode: str) -> Callable[..., None]:
    def f(s: Settings, place: Place, system: System, lg: Loadgen, ep: Endpoint, data: RunData) -> None:
        path = "/10m" if mode == "download" else "/upload"
        with Measured(system) as cpu:
            r = lg.client([mode, ep.host, str(ep.port), path, "--n", str(s.transfer_n), "--bytes", str(UPLOAD_BYTES)])
        size = BODIES["10m"] if mode == "download" else UPLOAD_BYTES
        short = sum(1 for b in r["bytes"] if b != size)
        rates = [b / 1e6 / t for b, t in zip(r["bytes"], r["seconds"])]
        _add(data, place.name, system.name, f"{mode}_10m",
             {"mb_per_s": median(rates), "errors": r["errors"] + short, **cpu.per(sum(r["bytes"]) / 1e9, "GB")})
    return f


def sc_sweep(s: Settings, place: Place, system: System, lg: Loadgen, ep: Endpoint, data: RunData) -> None:
    for c in s.sweep:
        with Packets(system) as packets, Measured(system) as cpu:
            r = lg.wrk(_url(ep, "/hello"), c, s.sweep_duration)
        n = r.get("requests", 0)
        _add(data, place.name, system.name, f"sweep_c{c}", {**r, **cpu.per(n / 10_000, "10k"), **packets.per_request(n)})


def sc_launch(s: Settings, place: Place, system: System, lg: Loadgen, ep: Endpoint, data: RunData) -> None:
    """Stop the system, launch both ends again and time until the first 200 through them (from the
    first process start, polling the way a client would: connect, GET, read the status line)."""
    system.stop()
    system.proxies.clear()
    t0 = time.monotonic()
    new_ep = system.start(poll=LAUNCH_POLL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _status(new_ep) == 200:
            _add(data, place.name, system.name, "launch", {"ms": (time.monotonic() - t0) * 1000})
            return
        time.sleep(LAUNCH_POLL)
    raise TimeoutError("no 200 within 30 s of launch")


LAUNCH_POLL = 0.002


def _status(ep: Endpoint) -> int:
    """Status of one GET /hello on a new connection (0: no answer)."""
    try:
        with socket.create_connection((ep.host, ep.port), timeout=2) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


SCENARIO_FUNCS: dict[str, Callable[..., None]] = {
    "wrk_small": sc_small("wrk"),
    "ab_small": sc_small("ab"),
    "latency_seq": sc_latency,
    "download_10m": sc_transfer("download"),
    "upload_10m": sc_transfer("upload"),
    "sweep": sc_sweep,
}

def start_origin(place: Place, plan: CpuPlan, groups: ProcessGroups, workdir: Path) -> tuple[int, Any]:
    d = workdir / f"origin-{place.name}"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = origin_conf(d, place.addr("b"), port)
    cmd = place.prefix("b") + plan.prefix("origin") + nginx_cmd(conf)
    m = groups.start("origin", cmd, d / "nginx.out")
    wait_until(lambda: listening(m.pid, port), 30, "origin nginx", m)
    return port, m


def run(s: Settings, plan: CpuPlan, groups: ProcessGroups, workdir: Path | None = None) -> RunData:
    data = RunData()
    with tempfile.TemporaryDirectory(prefix="ptproxy-bench-") as tmp:
        work = workdir or Path(tmp)
        work.chmod(0o755)  # nginx workers (user nobody) must reach the docroot
        pki = make_demo_pki(work / "pki")
        for prof in s.profiles:
            with PlaceContext(prof) as place:
                origin_port, origin = start_origin(place, plan, groups, work)
                ctx = Context(place, plan, groups, pki, work, origin_port, s.proxy_cores)
                lg = Loadgen(place, plan, s.threads)
                try:
                    for rep in range(s.repeat):
                        order = s.systems[rep % len(s.systems):] + s.systems[: rep % len(s.systems)]
                        for name in order:
                            system = SYSTEMS[name](name, ctx)
                            s.log(f"[{prof}] repetition {rep + 1}/{s.repeat}: {name}")
                            before = loadavg()
                            t0 = time.monotonic()
                            try:
                                run_system(s, place, system, lg, data)
                            except Exception as exc:  # noqa: BLE001 - recorded, run goes on
                                s.log(f"[{prof}] {name} failed: {exc}")
                                data.errors.append({"profile": prof, "system": name, "scenario": "*", "repetition": str(rep + 1),
                                                    "error": f"{type(exc).__name__}: {exc}",
                                                    "traceback": traceback.format_exc(limit=3)})
                            finally:
                                system.stop()
                            data.info.setdefault(prof, {}).setdefault(name, {}).update(system.info)
                            data.loadavg.append({"profile": prof, "system": name, "repetition": rep + 1,
                                                 "before": before, "after": loadavg(),
                                                 "seconds": round(time.monotonic() - t0, 1)})
                    stats = place.link_stats()
                    if stats:
                        data.link_stats[prof] = stats
                finally:
                    groups.stop(origin)
    return data
