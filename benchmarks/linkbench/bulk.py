"""The 10 MiB download only, for A/B comparisons of ptproxy trees on the linkbench link.

Each ``--tree NAME=PATH`` is one ptproxy pair whose processes import ``ptproxy`` from PATH (a git
worktree of another commit, or ``.`` for this checkout), all on the same emulated link, so the
trees are compared in the same time window: after ``--warm`` downloads at 0 % loss (the windows
grow, as in linkbench's 0 % phase), ``--n`` rounds at ``--loss``, each round one download per tree
in turn (the order rotates), with the load average noted beside every figure.

    python -m benchmarks.linkbench.bulk --tree old=/tmp/wt-5f1fbb7 --tree new=. --n 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness.procs import REPO_ROOT, cpu_seconds, python_env
from benchmarks.harness.stats import median
from ptproxy.ops.devcerts import make_demo_pki
from tools.netem import LinkEmulator, LinkProfile

from .runner import BDP, RATE_MBIT, RTT_MS, Agent, Bench, System, log, natural_conf, transport_conf


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def tree_system(i: int, name: str, spec: str, link: LinkEmulator, transport: dict[str, Any], *,
                http_base: int, quic_base: int, pure: bool | None = None) -> System:
    """The ``i``-th ``--tree NAME=PATH[:VAR=VALUE...]`` pair: ptproxy imported from PATH ('.' = this
    checkout), ``t.KEY=VALUE`` added to its [transport], other VARs set in its environment."""
    path, *assigns = spec.split(":")
    root = REPO_ROOT if path == "." else Path(path).resolve()
    s = System(name, link.a_addr, http_base + i, "ptproxy", "Bbr")
    own = {k[2:]: parse_value(v) for k, v in (kv.split("=", 1) for kv in assigns) if k.startswith("t.")}
    env = dict(kv.split("=", 1) for kv in assigns if not kv.startswith("t."))
    s.info.update(quic_port=quic_base + i, transport=transport | own)
    s.info["env"] = python_env(env | {"PYTHONPATH": f"{root}{os.pathsep}{REPO_ROOT}"}, pure=pure)
    return s


def finish(work: Path, *, keep: bool, json_path: str | None, report: dict[str, Any]) -> None:
    """Write the JSON report if asked, and remove the work directory unless it is to be kept."""
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
    if keep:
        print("work", work)
    else:
        shutil.rmtree(work, ignore_errors=True)


METRICS = {
    # side, metric line prefix -> short name
    ("a", 'ptproxy_flow_window_bytes{kind="receive"}'): "c_win",
    ("a", 'ptproxy_flow_window_bytes{kind="stream_receive"}'): "c_swin",
    ("b", 'ptproxy_flow_window_bytes{kind="send"}'): "s_sendwin",
    ("b", 'ptproxy_flow_blocked_seconds_total{direction="send"}'): "s_blocked",
    ("b", "ptproxy_congestion_window_bytes"): "s_cwnd",
    ("b", "ptproxy_lost_packets_total"): "s_lost",
}
COUNTERS = ("s_blocked", "s_lost", "a_rcvbuf_err", "b_rcvbuf_err")


def scrape(link: LinkEmulator, port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for side in ("a", "b"):
        # UDP datagrams dropped by a full socket receive buffer in this namespace
        snmp = subprocess.run(link.cmd_prefix(side) + ["cat", "/proc/net/snmp"], capture_output=True, text=True).stdout
        udp = [ln.split() for ln in snmp.splitlines() if ln.startswith("Udp:")]
        if len(udp) == 2:
            out[f"{side}_rcvbuf_err"] = float(dict(zip(udp[0], udp[1]))["RcvbufErrors"])
        txt = subprocess.run(link.cmd_prefix(side) + ["curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/metrics"],
                             capture_output=True, text=True).stdout  # fmt: skip
        for ln in txt.splitlines():
            name, _, value = ln.rpartition(" ")
            key = METRICS.get((side, name))
            if key:
                out[key] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.linkbench.bulk", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH[:VAR=VALUE...] (repeatable; PATH '.' = this checkout; VARs set in its environment, "
                         "t.KEY=VALUE added to its [transport])")
    ap.add_argument("--conf", choices=("natural", "tuned"), default="natural")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE added to [transport] (JSON value)")
    ap.add_argument("--loss", type=float, default=0.01)
    ap.add_argument("--n", type=int, default=4, help="rounds at --loss")
    ap.add_argument("--warm", type=int, default=1, help="downloads at 0 %% loss first")
    ap.add_argument("--seq", type=int, default=0,
                    help="small GETs, one after another on a kept-alive connection, before the first download of each pair "
                         "(linkbench's 0 %% phase runs 100-300 of them first)")
    ap.add_argument("--pure", action="store_true", help="PTPROXY_NO_EXTENSIONS=1 for every tree")
    ap.add_argument("--qlog", action="store_true", help="qlog on both ends (kept with --keep)")
    ap.add_argument("--qlog-server", action="store_true",
                    help="qlog on the server end only (the sender of the download; the client end undisturbed)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in (a.tree or ["head=."])]
    tr = natural_conf() if a.conf == "natural" else transport_conf("Bbr")
    for kv in a.set:
        k, v = kv.split("=", 1)
        tr[k] = parse_value(v)
    work = Path(tempfile.mkdtemp(prefix="linkbulk-"))
    work.chmod(0o755)
    pki = make_demo_pki(work / "pki")
    res: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    with LinkEmulator(LinkProfile(rtt_ms=RTT_MS, loss=0.0, rate_mbit=RATE_MBIT), prefix=f"lbb{os.getpid()}") as link:
        b = Bench(argparse.Namespace(silence=0, blackout_extra=2.0), link, work, pki)
        systems = []
        for i, (name, spec) in enumerate(trees):
            s = tree_system(i, name, spec, link, tr, http_base=20180, quic_base=20110, pure=True if a.pure else None)
            if a.qlog:
                s.info["extra_toml"] = f'[system]\nqlog_dir = "{work}/{name}/qlog"\n'
            elif a.qlog_server:
                s.info["server_extra_toml"] = f'[system]\nqlog_dir = "{work}/{name}/qlog"\n'
            systems.append(s)
        b.systems = systems
        try:
            b.start_origin()
            for s in systems:
                b.start_ptproxy(s)
            ag = b.agent = Agent(link)

            def one(s: System, loss: float) -> dict[str, Any]:
                st0 = link.stats()
                load = os.getloadavg()[0]
                m0 = scrape(link, s.info["metrics_port"])
                c0 = {k: cpu_seconds(p.pid) for k, p in s.procs.items()}
                r = ag("fresh", host=s.host, port=s.port, path="/10m", timeout=300)
                c1 = {k: cpu_seconds(p.pid) for k, p in s.procs.items()}
                st = link.stats()
                m1 = scrape(link, s.info["metrics_port"])
                out: dict[str, Any] = {"loss": loss, "load1": round(load, 2)}
                out |= {k: (st["b_to_a"].get(k) or 0) - (st0["b_to_a"].get(k) or 0) for k in ("lost", "queue_drops")}
                # IP bytes the emulator carried server -> client (what its rate limit counts)
                wire = (st["b_to_a"].get("delivered_bytes") or 0) - (st0["b_to_a"].get("delivered_bytes") or 0)
                out["wire_pkts"] = (st["b_to_a"].get("delivered") or 0) - (st0["b_to_a"].get("delivered") or 0)
                out["wire_bytes"] = wire
                # datagrams from the client end during the download: nearly all ACKs
                out["acks"] = (st["a_to_b"].get("pkts_in") or 0) - (st0["a_to_b"].get("pkts_in") or 0)
                for k, v in m1.items():
                    out[k] = round(v - m0.get(k, 0.0), 3) if k in COUNTERS else int(v)
                if "error" in r:
                    out["error"] = r["error"]
                else:
                    span = r["t1"] - r["t_sent"]
                    out["mbit"] = round(r["bytes"] * 8 / 1e6 / span, 1)
                    # the figure if the link carried those IP bytes back to back from the request's
                    # arrival (one RTT for the request's and the last byte's propagation)
                    out["ceiling"] = round(r["bytes"] * 8 / 1e6 / (RTT_MS / 1000 + wire * 8 / (RATE_MBIT * 1e6)), 1)
                    out["cpu"] = {k: round(100 * (c1[k] - c0[k]) / span) for k in c0}
                log(f"{s.name} loss {loss:.0%}: {out}")
                return out

            if a.seq:
                for s in systems:
                    ag("open", name=f"seq-{s.name}", host=s.host, port=s.port, n=1)
                    ag("seq", name=f"seq-{s.name}", path="/hello", n=a.seq)
            for _ in range(a.warm):
                for s in systems:
                    res[s.name].append(one(s, 0.0))
            link.set(loss=a.loss)
            for i in range(a.n):
                k = i % len(systems)
                for s in systems[k:] + systems[:k]:
                    res[s.name].append(one(s, a.loss))
        finally:
            if b.agent is not None:
                b.agent.p.terminate()
            b.groups.stop_all()
    print(f"transport: {tr}; pure={a.pure}; BDP {BDP}")
    for name, runs in res.items():
        for loss in sorted({r["loss"] for r in runs}):
            mb = [r["mbit"] for r in runs if r["loss"] == loss and "mbit" in r]
            loads = [r["load1"] for r in runs if r["loss"] == loss]
            print(f"{name:>12} loss {loss:.0%}: median {median(mb) if mb else None} Mbit/s, each {mb}, "
                  f"load1 {min(loads):.2f}-{max(loads):.2f}")  # fmt: skip
    finish(work, keep=a.keep, json_path=a.json, report={"transport": tr, "pure": a.pure, "trees": dict(trees), "runs": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
