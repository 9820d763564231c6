"""Command line of the link emulator.

    python -m tools.netem [link options] [--in a|b] [-- cmd ...]
    python -m tools.netem ctl [--prefix P] stats | set k=v ... | blackout SECONDS | reset
    python -m tools.netem cleanup [--prefix P]
    python -m tools.netem check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from . import control, netns
from .emulator import LinkEmulator, python_env
from .profile import LinkProfile

RUN_HELP = """\
Emulate a link between two network namespaces, <prefix>-a (10.77.0.1, fd77::1) and
<prefix>-b (10.77.0.2, fd77::2), joined by TUN devices and a user-space forwarder: one-way delay
(RTT/2 each way), jitter, random loss and a rate limit with a drop-tail queue, independently in
each direction, at packet level (TCP, UDP and QUIC see the same link). Needs root.

Without a command it runs until Ctrl-C (or SIGTERM). With "-- cmd ..." it runs the command and
stops when it exits (exit status passed through); the command runs in the root namespace with
NETEM_NS_A, NETEM_NS_B, NETEM_A_ADDR, NETEM_B_ADDR, NETEM_CONTROL and NETEM_PREFIX set (use
"ip netns exec $NETEM_NS_A ..."), or inside a namespace with --in a|b. Counters are printed on
exit. While it runs:

    python -m tools.netem ctl --prefix ptp stats
    python -m tools.netem ctl --prefix ptp set loss=0.05 a_to_b.rate_mbit=5
    python -m tools.netem ctl --prefix ptp blackout 3

Leftovers of a killed run (normally removed anyway, and on the next start with the same prefix):
    python -m tools.netem cleanup --prefix ptp

examples:
    python -m tools.netem --rtt 50 --loss 0.01 --rate 100
    python -m tools.netem --rtt 200 --jitter 5 --rate 10 --queue 100 -- ./bench.sh
"""


def _run_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m tools.netem",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--prefix", default="ptp", help="namespace name prefix (default: ptp)")
    g = ap.add_argument_group("link (each direction)")
    g.add_argument("--rtt", type=float, default=0.0, metavar="MS", help="round-trip delay, ms")
    g.add_argument("--jitter", type=float, default=0.0, metavar="MS", help="per-packet jitter, ms")
    g.add_argument("--jitter-dist", choices=("uniform", "normal"), default="uniform",
                   help="uniform in [-J, +J] (default) or normal with sd J")
    g.add_argument("--reorder", action="store_true",
                   help="let jitter reorder packets (default: FIFO, never reorders)")
    g.add_argument("--loss", type=float, default=0.0, metavar="P",
                   help="random loss probability, e.g. 0.01")
    g.add_argument("--loss-burst", type=float, default=0.0, metavar="N",
                   help="mean loss burst length in packets (Gilbert-Elliott), same mean loss")
    g.add_argument("--rate", type=float, default=0.0, metavar="MBIT",
                   help="rate limit, Mbit/s of IP packets (0: none)")
    g.add_argument("--rate-ba", type=float, default=None, metavar="MBIT",
                   help="b->a rate if different (asymmetric link)")
    g.add_argument("--queue", type=int, default=None, metavar="PKTS",
                   help="drop-tail queue limit, packets (default: one BDP, <= 1000 packets)")
    g.add_argument("--queue-bytes", type=int, default=None, metavar="BYTES",
                   help="drop-tail queue limit, bytes")
    g.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    g.add_argument("--mtu", type=int, default=1500)
    g.add_argument("--no-ipv6", action="store_true", help="IPv4 only")
    ap.add_argument("--in", dest="side", choices=("a", "b"), default=None,
                    help="run the command inside namespace a or b")
    ap.add_argument("--stats-every", type=float, default=0.0, metavar="S",
                    help="print one-line counters every S seconds")
    ap.add_argument("--json", action="store_true", help="print final stats as JSON")
    ap.add_argument("--no-realtime", action="store_true",
                    help="do not run the forwarder SCHED_FIFO (default: priority 10; it keeps "
                    "the added delay error well under 1 ms on a busy machine)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="forwarder niceness when not real-time (default -10)")
    return ap


def _summary(st: dict[str, Any]) -> str:
    lines = []
    for d in ("a_to_b", "b_to_a"):
        s = st[d]
        lines.append(
            f"{d}: in {s['pkts_in']} pkts/{s['bytes_in']} B, delivered {s['delivered']}"
            f"/{s['delivered_bytes']} B, lost {s['lost']}, queue drops {s['queue_drops']},"
            f" blackout drops {s['blackout_drops']}, write errors {s['write_errors']}"
        )
    sc = st["sched"]
    lines.append(
        f"scheduling: {sc['deliveries']} deliveries, late mean {sc['late_mean_us']:.0f} us,"
        f" max {sc['late_max_us']:.0f} us; forwarder CPU {sc['cpu_pct']:.1f}%"
    )
    return "\n".join(lines)


def _oneline(st: dict[str, Any]) -> str:
    ab, ba = st["a_to_b"], st["b_to_a"]
    return (
        f"[{st['uptime']:7.1f}s] a->b {ab['delivered']}/{ab['pkts_in']} (lost {ab['lost']},"
        f" qdrop {ab['queue_drops']}, q {ab['queued_pkts']})  b->a {ba['delivered']}"
        f"/{ba['pkts_in']} (lost {ba['lost']}, qdrop {ba['queue_drops']}, q {ba['queued_pkts']})"
        f"  cpu {st['sched']['cpu_pct']:.0f}%"
    )


def cmd_run(argv: list[str]) -> int:
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    a = _run_parser().parse_args(argv)
    ok, why = netns.available()
    if not ok:
        print(f"netem: cannot run: {why}", file=sys.stderr)
        return 2
    profile = LinkProfile(
        rtt_ms=a.rtt, jitter_ms=a.jitter, jitter_dist=a.jitter_dist, reorder=a.reorder,
        loss=a.loss, loss_burst=a.loss_burst, rate_mbit=a.rate or None, rate_mbit_ba=a.rate_ba,
        queue_packets=a.queue, queue_bytes=a.queue_bytes, seed=a.seed, mtu=a.mtu,
        ipv6=not a.no_ipv6,
    )  # fmt: skip
    rc = 0
    proc: subprocess.Popen[bytes] | None = None
    link = LinkEmulator(profile, prefix=a.prefix, nice=a.nice, realtime=not a.no_realtime)
    try:
        with link:
            print(
                f"netem: {link.ns_a} ({link.a_addr}, {link.a_addr6}) <-> {link.ns_b} "
                f"({link.b_addr}, {link.b_addr6}); control {link.control_path}; seed {link.seed};"
                f" forwarder {link.priority}",
                file=sys.stderr,
            )
            env = python_env(
                {
                    "NETEM_PREFIX": a.prefix, "NETEM_NS_A": link.ns_a, "NETEM_NS_B": link.ns_b,
                    "NETEM_A_ADDR": link.a_addr, "NETEM_B_ADDR": link.b_addr,
                    "NETEM_CONTROL": str(link.control_path),
                }
            )  # fmt: skip
            if cmd:
                full = (link.cmd_prefix(a.side) if a.side else []) + cmd
                try:
                    proc = subprocess.Popen(full, env=env)
                except OSError as e:
                    print(f"netem: cannot run {cmd[0]!r}: {e}", file=sys.stderr)
                    return 127
            next_stats = time.monotonic() + a.stats_every if a.stats_every else None
            while True:
                if proc is not None and proc.poll() is not None:
                    rc = proc.returncode
                    break
                if next_stats is not None and time.monotonic() >= next_stats:
                    print(_oneline(link.stats()), file=sys.stderr)
                    next_stats += a.stats_every
                time.sleep(0.1 if proc is not None else min(0.5, a.stats_every or 0.5))
    except (KeyboardInterrupt, SystemExit) as e:
        rc = 130 if isinstance(e, KeyboardInterrupt) else int(e.code or 0)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()
    st = link.final_stats
    if st is not None:
        print(json.dumps(st, indent=1) if a.json else _summary(st))
    return rc


def cmd_ctl(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.netem ctl",
                                 description=control.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default="ptp")
    ap.add_argument("request", nargs=argparse.REMAINDER, help="stats | set k=v ... | blackout S")
    a = ap.parse_args(argv)
    line = " ".join(a.request) or "stats"
    try:
        reply = control.request(netns.control_path(a.prefix), line)
    except OSError as e:
        print(f"netem ctl: no forwarder for prefix {a.prefix!r}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=1))
    return 0 if reply.get("ok") else 1


def cmd_cleanup(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.netem cleanup",
                                 description="Remove the namespaces, forwarder and files a "
                                 "link emulator run with this prefix left behind.")
    ap.add_argument("--prefix", default="ptp")
    a = ap.parse_args(argv)
    removed = netns.cleanup(a.prefix)
    print("removed: " + ", ".join(removed) if removed else "nothing to remove")
    return 0


def cmd_check(argv: list[str]) -> int:
    ok, why = netns.available()
    print(why)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_forwarder":
        from .forwarder import main as fw_main

        return fw_main(argv[1:])
    sub = {"ctl": cmd_ctl, "cleanup": cmd_cleanup, "check": cmd_check}
    if argv and argv[0] in sub:
        return sub[argv[0]](argv[1:])
    return cmd_run(argv)


if __name__ == "__main__":
    sys.exit(main())
