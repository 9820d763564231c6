"""Measure the emulator itself: RTT error, TCP goodput vs rate limit, scheduling error, CPU.

    python -m tools.netem.selfbench [--rates 100,200] [--rtt 20] [--seconds 5]

For each rate it runs bulk TCP in one direction, then in both directions at once, and prints
the goodput, the forwarder's delivery lateness (how long after its due time each packet was
written to the TUN) and the forwarder's CPU use. Needs root.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from .emulator import LinkEmulator
from .profile import LinkProfile

TOOLS = "tools.netem.tools"


def _tool(link: LinkEmulator, side: str, *args: str) -> subprocess.Popen[str]:
    return link.python_in(side, ["-m", TOOLS, *args], stdout=subprocess.PIPE, text=True)


def _last_json(p: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    res: dict[str, Any] = json.loads([x for x in out.splitlines() if x.strip()][-1])
    return res


def _percentile_us(hist: dict[str, int], q: float) -> str:
    total = sum(hist.values())
    acc = 0
    for label, n in hist.items():
        acc += n
        if total and acc >= q * total:
            return label
    return "-"


def ping_rtt(link: LinkEmulator, count: int = 50, interval: float = 0.02) -> dict[str, Any]:
    p = _tool(link, "a", "ping", link.b_addr, "--count", str(count), "--interval", str(interval))
    return _last_json(p)


def bulk(link: LinkEmulator, both: bool, seconds: float) -> dict[str, Any]:
    pairs = [("a", "b", "5901")] + ([("b", "a", "5902")] if both else [])
    recvs = []
    for _src, dst, port in pairs:
        r = _tool(link, dst, "tcp-recv", "--port", port)
        assert r.stdout is not None
        json.loads(r.stdout.readline())
        recvs.append(r)
    link.reset_stats()
    sends = [
        _tool(link, src, "tcp-send", link.addr(dst), port, "--seconds", str(seconds))
        for src, dst, port in pairs
    ]
    res = [_last_json(r) for r in recvs]
    for s in sends:
        _last_json(s)
    st = link.stats()
    return {"goodput_mbit": [round(r["mbit"], 1) for r in res], "stats": st}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.netem.selfbench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100", help="comma-separated Mbit/s; 0 = unlimited")
    ap.add_argument("--rtt", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--prefix", default="ptpbench")
    ap.add_argument("--no-realtime", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    ok, why = LinkEmulator.available()
    if not ok:
        print(f"unavailable: {why}", file=sys.stderr)
        return 2
    results = []
    for rate in [float(x) for x in a.rates.split(",")]:
        profile = LinkProfile(rtt_ms=a.rtt, rate_mbit=rate or None, seed=1)
        with LinkEmulator(profile, prefix=a.prefix, realtime=not a.no_realtime) as link:
            idle = ping_rtt(link)
            row: dict[str, Any] = {
                "rate_mbit": rate,
                "rtt_ms": a.rtt,
                "priority": link.priority,
                "ping_min_ms": round(idle["min_ms"], 3),
                "ping_avg_ms": round(idle["avg_ms"], 3),
                "ping_max_ms": round(idle["max_ms"], 3),
            }
            for mode, both in (("one_way", False), ("both_ways", True)):
                r = bulk(link, both, a.seconds)
                sc = r["stats"]["sched"]
                row[mode] = {
                    "goodput_mbit": r["goodput_mbit"],
                    "cpu_pct": round(sc["cpu_pct"], 1),
                    "late_mean_us": round(sc["late_mean_us"], 1),
                    "late_max_us": round(sc["late_max_us"], 1),
                    "late_p99": _percentile_us(sc["late_hist"], 0.99),
                    "late_p999": _percentile_us(sc["late_hist"], 0.999),
                    "late_over_1ms_pct": round(
                        100.0
                        * sum(n for k, n in sc["late_hist"].items()
                              if k.startswith(("1000-", "2000-", "5000-", ">=")))
                        / max(1, sc["deliveries"]),
                        3,
                    ),
                    "queue_drops": [r["stats"][d]["queue_drops"] for d in ("a_to_b", "b_to_a")],
                    "late_hist": sc["late_hist"],
                }
            results.append(row)
            if not a.json:
                print(
                    f"rate {rate:g} Mbit/s, rtt {a.rtt:g} ms ({row['priority']}): idle ping"
                    f" min/avg/max {row['ping_min_ms']}/{row['ping_avg_ms']}/"
                    f"{row['ping_max_ms']} ms"
                )
                for mode in ("one_way", "both_ways"):
                    m = row[mode]
                    print(
                        f"  {mode:9s}: goodput {m['goodput_mbit']} Mbit/s, forwarder CPU"
                        f" {m['cpu_pct']}%, lateness mean {m['late_mean_us']} us,"
                        f" p99 {m['late_p99']}, p99.9 {m['late_p999']}, max"
                        f" {m['late_max_us']} us, >1 ms {m['late_over_1ms_pct']}%"
                    )
                sys.stdout.flush()
    if a.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
