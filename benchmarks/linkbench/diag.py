"""Where does the time go? One ptproxy pair on the same link, with CPU accounting per process
and (optionally) qlog on both ends: sequential GETs, then a 10 MiB download.

    python -m benchmarks.linkbench.diag [--algo Bbr] [--qlog] [--loss 0.01] [--n 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.harness.procs import cpu_seconds
from benchmarks.harness.stats import median
from ptproxy.ops.devcerts import make_demo_pki
from tools.netem import LinkEmulator, LinkProfile

from .runner import BDP, RATE_MBIT, RTT_MS, Agent, Bench, System, pct


def cpu(pid: int) -> float:
    return cpu_seconds(pid, tree=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", default="Bbr")
    ap.add_argument("--qlog", action="store_true")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--extra", default="", help="extra TOML appended to both ends")
    ap.add_argument("--window-bdp", type=float, default=None,
                    help="receive/send/stream windows as this many BDPs (default: the bench's WINDOW_BDPS)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="linkdiag-"))
    work.chmod(0o755)
    pki = make_demo_pki(work / "pki")
    with LinkEmulator(LinkProfile(rtt_ms=RTT_MS, loss=a.loss, rate_mbit=RATE_MBIT), prefix="lbd") as link:
        args = argparse.Namespace(silence=0, blackout_extra=2.0)
        b = Bench(args, link, work, pki)
        s = System(f"ptproxy-{a.algo}", link.a_addr, 20080, "ptproxy", a.algo)
        s.info["quic_port"] = 20010
        extra = a.extra.replace("\\n", "\n")
        if a.qlog:
            extra += f'\n[system]\nqlog_dir = "{work}/qlog"\n'
        s.info["extra_toml"] = extra
        if a.window_bdp is not None:
            w = int(a.window_bdp * BDP)
            s.info["transport_overrides"] = {
                k: w for k in ("receive_window", "send_window", "stream_receive_window")
            }
        b.systems = [s]
        b.start_origin()
        b.start_ptproxy(s)
        ag = b.agent = Agent(link)
        pids = {k: p.pid for k, p in s.procs.items()}
        ag("open", name="x", host=s.host, port=s.port, n=1)
        c0 = {k: cpu(p) for k, p in pids.items()}
        t0 = time.monotonic()
        rs = ag("seq", name="x", path="/hello", n=a.n)["results"]
        dt = time.monotonic() - t0
        c1 = {k: cpu(p) for k, p in pids.items()}
        ms = sorted(r["ms"] for r in rs if "ms" in r)
        print("seq", pct(ms), "head-vs-end ms (p50)", median(r["t1"] - r["t_head"] for r in rs) * 1000)
        print("seq cpu %:", {k: round(100 * (c1[k] - c0[k]) / dt, 1) for k in pids})
        print("seq times:", [round(x["ms"], 1) for x in rs])
        st0 = link.stats()
        c0 = {k: cpu(p) for k, p in pids.items()}
        t0 = time.monotonic()
        r = ag("fresh", host=s.host, port=s.port, path="/10m", timeout=300)
        dt = time.monotonic() - t0
        c1 = {k: cpu(p) for k, p in pids.items()}
        st1 = link.stats()
        print("download Mbit/s", r["bytes"] * 8 / 1e6 / (r["t1"] - r["t_sent"]), "s", round(dt, 2))
        print("download cpu %:", {k: round(100 * (c1[k] - c0[k]) / dt, 1) for k in pids})
        for d in ("a_to_b", "b_to_a"):
            print(d, {k: st1[d][k] - st0[d][k] for k in ("pkts_in", "delivered", "lost", "queue_drops", "blackout_drops")})
        print("sched", json.dumps(st1.get("sched"))[:400])
        start, until = link.blackout(7.0)
        print("blackout", start, until)
        time.sleep(max(0.0, until - time.monotonic()))
        r = ag("poll", targets={"x": [s.host, s.port]}, path="/hello", timeout=0.5, interval=0.05, deadline=60)["results"]["x"]
        print("after blackout: first success", (r["t1"] - until) * 1000, "ms; attempts", r["attempts"],
              "; wall clock of blackout end", time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - until))),
              f"{(time.time() - (time.monotonic() - until)) % 1:.3f}")
        time.sleep(0.5)
        ag.p.terminate()
        b.groups.stop_all()
    print("work", work)
    for f in sorted((work / s.name).glob("*.log")):
        print("==", f.name)
        print(f.read_text()[-3000:])


if __name__ == "__main__":
    main()
