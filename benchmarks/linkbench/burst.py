"""The 64-request burst only, repeated, for A/B comparisons of ptproxy trees on the linkbench link.

Each ``--tree NAME=PATH`` is one ptproxy pair (as in bulk.py) on the same emulated link. A round,
per tree in turn (the order rotates): ``k`` sequential GETs on a connection of their own (``k``
drawn from 0..``--seq-max``, the same for every tree in the round, so that the pairs' stream
counts differ from round to round as they do between linkbench runs), ``--silence`` seconds of
quiet, then 64 GETs at once on 64 keep-alive connections opened before the quiet (linkbench's
burst phase). A request is *late* if it took more than 1.8 RTT (90 ms): at 0 % loss every
request can complete within one RTT plus processing (the 64 take 55-75 ms on this machine); one
that waited for something from the peer first ends near two.

    python -m benchmarks.linkbench.burst --tree old=/tmp/wt-old --tree new=. --n 10
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ptproxy.ops.devcerts import make_demo_pki
from tools.netem import LinkEmulator, LinkProfile

from .bulk import finish, tree_system
from .runner import RATE_MBIT, RTT_MS, Agent, Bench, log, natural_conf, pct, summarize_burst


def stream_credit(link: LinkEmulator, port: int) -> float | None:
    """The client end's ``ptproxy_stream_credit`` (streams it may open at once), if it has one."""
    txt = subprocess.run(link.cmd_prefix("a") + ["curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/metrics"],
                         capture_output=True, text=True).stdout  # fmt: skip
    for ln in txt.splitlines():
        if ln.startswith("ptproxy_stream_credit "):
            return float(ln.split()[1])
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.linkbench.burst", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH[:VAR=VALUE...] (repeatable; PATH '.' = this checkout; VARs set in its environment, t.KEY=VALUE added to its [transport])")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--n", type=int, default=8, help="rounds")
    ap.add_argument("--burst", type=int, default=64)
    ap.add_argument("--seq-max", type=int, default=120, help="sequential GETs before a round: 0..this")
    ap.add_argument("--silence", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-level", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in (a.tree or ["head=."])]
    rnd = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="linkburst-"))
    work.chmod(0o755)
    pki = make_demo_pki(work / "pki")
    res: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    late_ms = 1.8 * RTT_MS
    with LinkEmulator(LinkProfile(rtt_ms=RTT_MS, loss=a.loss, rate_mbit=RATE_MBIT), prefix=f"lbu{os.getpid()}") as link:
        b = Bench(argparse.Namespace(silence=0, blackout_extra=2.0, log_level=a.log_level), link, work, pki)
        systems = []
        for i, (name, spec) in enumerate(trees):
            s = tree_system(i, name, spec, link, natural_conf(), http_base=20280, quic_base=20210)
            systems.append(s)
        b.systems = systems
        try:
            b.start_origin()
            for s in systems:
                b.start_ptproxy(s)
            ag = b.agent = Agent(link)
            for s in systems:
                ag("open", name=f"seq-{s.name}", host=s.host, port=s.port, n=1)
            for i in range(a.n):
                k = rnd.randint(0, a.seq_max)
                j = i % len(systems)
                for s in systems[j:] + systems[:j]:
                    if k:
                        ag("seq", name=f"seq-{s.name}", path="/hello", n=k)
                    ag("open", name=f"burst-{s.name}", host=s.host, port=s.port, n=a.burst)
                    load = os.getloadavg()[0]
                    time.sleep(a.silence)
                    credit = stream_credit(link, s.info["metrics_port"])
                    r = ag("burst", name=f"burst-{s.name}", path="/hello", n=a.burst)
                    sb = summarize_burst(r, a.burst)
                    ag("close", name=f"burst-{s.name}")
                    late = [x for x in sb["ms_sorted"] if x > late_ms]
                    out = {"round": i, "seq_before": k, "stream_credit": credit, "load1": round(load, 2), "summary": sb["summary"],
                           "late": len(late), "ms_sorted": sb["ms_sorted"], "errors": sb["errors"]}  # fmt: skip
                    res[s.name].append(out)
                    log(f"{s.name} round {i} (seq {k}, stream credit {credit}): min {sb['summary'].get('min')} p50 {sb['summary'].get('p50')} p99 {sb['summary'].get('p99')} "
                        f"late {len(late)} load {load:.2f}")  # fmt: skip
        finally:
            if b.agent is not None:
                b.agent.p.terminate()
            b.groups.stop_all()
    for name, runs in res.items():
        lates = [r["late"] for r in runs]
        p99 = [r["summary"].get("p99") for r in runs]
        credit = [r["stream_credit"] for r in runs]
        print(f"{name:>10}: stream credit before each burst {credit}")
        print(f"{name:>10}: bursts with a late request {sum(1 for x in lates if x)}/{len(runs)}, late counts {lates}, "
              f"p99s {p99}, p99 of p99s {pct([x for x in p99 if x is not None]).get('max')}")  # fmt: skip
    finish(work, keep=a.keep, json_path=a.json, report={"trees": dict(trees), "runs": res, "args": vars(a)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
