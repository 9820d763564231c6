"""Recovery only, repeated: linkbench's server-restart and blackout phases, ``--rounds`` times,
for a few ptproxy systems on the emulated link (one sample per phase and run in the full bench
is too few to see a rare slow path). ``caddy-pair`` may be listed too: restarted in its turn, it
puts the full bench's neighbour (its restart runs just before the first ptproxy system's) in front
of the ptproxy systems (not with ``--end-before-deadline``, which reads ptproxy logs).

    python -m benchmarks.linkbench.recovery [--systems ptproxy-Bbr,ptproxy-natural] [--rounds 5]
        [--warm] [--log-level debug --qlog --wire --keep] [--out /tmp/recovery]

Each round: restart the server end (as ``Bench.restart``), then a blackout of max_idle_timeout +
``--blackout-extra`` s (as ``Bench.blackout``; several values, comma-separated, are used in turn:
where the blackout ends relative to the client's reconnection attempt matters). Prints each
figure and whether the session resumed; ``--out`` writes them as JSON (with
``wall_minus_monotonic``, to line the timestamps up with qlog's wall-clock times).

``--end-before-deadline MS`` (needs ``--log-level``, for the millisecond timestamps): instead, one
system at a time, the blackout ends MS ms before the deadline of the reconnection attempt the
client end starts when its connection is lost (its first Initial + max_idle_timeout), as read
from the client end's log; the request that then arrives hurries that attempt in its last
moments. ``resumed`` is then whether the connection that served it resumed.
``--end-after-attempt MS``: the same, ending MS ms after that attempt's first Initial (a request
arriving while the attempt is young: its first resend, DialTrigger.first_gap).

``--wire``: each side's namespace logs the ptproxy systems' tunnel datagrams as they cross its
interface (``tools.netem.tools udp-tap``: kernel timestamps as ``time.monotonic()``) to
``wire-a.jsonl`` / ``wire-b.jsonl`` in the work directory (with ``--keep``): the link's share of a
timeline apart from each end's (benchmarks/results/blackout.txt section 5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ptproxy.ops.devcerts import make_demo_pki
from tools.netem import LinkEmulator, LinkProfile

from .runner import (
    CADDY_HTTP_PORT,
    MAX_IDLE_MS,
    NATURAL_SYSTEMS,
    RATE_MBIT,
    RTT_MS,
    Agent,
    Bench,
    System,
    log,
)


def systems(names: list[str], link: LinkEmulator) -> list[System]:
    """The named ptproxy systems, with linkbench's ports and configurations; ``caddy-pair`` too
    (a neighbour: its restart just before a ptproxy system's, as in the full bench's order)."""
    out = []
    for name in names:
        if name == "caddy-pair":
            s = System(name, link.a_addr, CADDY_HTTP_PORT, "caddy")
        elif name in NATURAL_SYSTEMS:
            tr, what = NATURAL_SYSTEMS[name]
            i = list(NATURAL_SYSTEMS).index(name)
            s = System(name, link.a_addr, 20090 + i, "ptproxy", tr["congestion_algorithm"])
            s.info.update(quic_port=20020 + i, transport=tr, what=what)
        elif name.startswith("ptproxy-"):
            algo = name.removeprefix("ptproxy-")
            s = System(name, link.a_addr, 20080, "ptproxy", algo)
            s.info["quic_port"] = 20010
        else:
            raise SystemExit(f"{name}: not a ptproxy system of linkbench (nor caddy-pair)")
        out.append(s)
    if len({s.port for s in out}) != len(out):
        raise SystemExit("at most one per-algorithm (tuned) system at a time")
    return out


def _log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _wall(ts: str) -> float:
    """A JSON log line's ``ts`` (UTC, milliseconds) as time.time()."""
    import calendar

    secs, _, ms = ts.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(secs, "%Y-%m-%dT%H:%M:%S")) + int(ms or 0) / 1000


def late_blackout(b: Bench, s: System, lead_ms: float, *, after_start: bool = False) -> dict[str, Any]:
    """A blackout that ends ``lead_ms`` before the client's reconnection attempt gives up (with
    ``after_start``: ``lead_ms`` after that attempt's first Initial)."""
    ag = b.agent
    assert ag is not None
    clog, slog = s.logs["client"], s.logs["server"]
    # Connected first (an earlier system's blackout took this one's connection too).
    ag("poll", targets={s.name: [s.host, s.port]}, path="/hello", timeout=0.5, interval=0.05, deadline=60)
    time.sleep(0.5)
    cmark, smark = len(_log_lines(clog)), len(_log_lines(slog))
    b.link.blackout(60.0)
    offset = time.time() - time.monotonic()
    t_lost = None
    deadline = time.monotonic() + 30
    while t_lost is None and time.monotonic() < deadline:
        time.sleep(0.005)
        for rec in _log_lines(clog)[cmark:]:
            if " lost: " in rec.get("msg", ""):
                t_lost = _wall(rec["ts"]) - offset
                break
    if t_lost is None:
        b.link.blackout(0)
        return {"error": "the client end's connection was not lost"}
    end = t_lost + lead_ms / 1000 if after_start else t_lost + MAX_IDLE_MS / 1000 - lead_ms / 1000
    _, until = b.link.blackout(max(0.0, end - time.monotonic()))
    time.sleep(max(0.0, until - time.monotonic()))
    r = ag("poll", targets={s.name: [s.host, s.port]}, path="/hello", timeout=0.5, interval=0.05, deadline=60)
    x = dict(r["results"][s.name])
    x["t_blackout_end"], x["t_lost"] = until, t_lost
    if "t1" in x:
        x["ms_from_blackout_end"] = (x["t1"] - until) * 1000
    time.sleep(0.3)
    established = [rec["msg"] for rec in _log_lines(slog)[smark:] if " established " in rec.get("msg", "")]
    x["server_established"] = established
    x["resumed"] = bool(established) and "(resumed)" in established[-1]
    when = "after the attempt's start" if after_start else "before the attempt's deadline"
    log(f"{s.name}: blackout ending {lead_ms:g} ms {when}: first success "
        f"{x.get('ms_from_blackout_end', x.get('error'))} ms, resumed {x['resumed']}")
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.linkbench.recovery", description=__doc__)
    ap.add_argument("--systems", default="ptproxy-Bbr,ptproxy-natural")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--blackout-extra", default="2.0", help="s beyond max_idle_timeout; comma-separated: in turn")
    ap.add_argument("--warm", action="store_true", help="a 10 MiB download per system first (as the bench's phases)")
    ap.add_argument("--skip", default="", help="restart or blackout")
    ap.add_argument("--end-before-deadline", type=float, default=None, metavar="MS")
    ap.add_argument("--end-after-attempt", type=float, default=None, metavar="MS")
    ap.add_argument("--log-level", default=None)
    ap.add_argument("--qlog", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--wire", action="store_true", help="kernel-timestamped datagram logs (see above)")
    ap.add_argument("--out", default=None, help="JSON file")
    a = ap.parse_args(argv)
    extras = [float(x) for x in a.blackout_extra.split(",") if x]
    late = a.end_before_deadline if a.end_after_attempt is None else a.end_after_attempt
    if late is not None and "caddy-pair" in a.systems.split(","):
        raise SystemExit("--end-before-deadline / --end-after-attempt read ptproxy logs: leave caddy-pair out")
    skip = {x for x in a.skip.split(",") if x}
    work = Path(tempfile.mkdtemp(prefix="lbrecovery-"))
    work.chmod(0o755)
    rows: list[dict[str, Any]] = []
    taps: list[subprocess.Popen[Any]] = []
    load = [round(x, 2) for x in os.getloadavg()]
    pki = make_demo_pki(work / "pki")
    with LinkEmulator(LinkProfile(rtt_ms=RTT_MS, loss=0.0, rate_mbit=RATE_MBIT), prefix=f"lbr{os.getpid()}") as link:
        args = argparse.Namespace(silence=0, blackout_extra=extras[0], log_level=a.log_level, qlog=a.qlog)
        b = Bench(args, link, work, pki)
        b.systems = systems([x for x in a.systems.split(",") if x], link)
        b.res = {s.name: {} for s in b.systems}
        try:
            b.start_origin()
            b.agent = ag = Agent(link)
            for s in b.systems:
                if s.kind == "caddy":
                    b.start_caddy_pair(s)
                else:
                    b.start_ptproxy(s)
                ag("fresh", host=s.host, port=s.port, path="/hello")
                if a.warm:
                    ag("fresh", host=s.host, port=s.port, path="/10m", timeout=300)
            if a.wire:
                ports = ",".join(str(s.info["quic_port"]) for s in b.systems if "quic_port" in s.info)
                for side in ("a", "b"):
                    with open(work / f"wire-{side}.jsonl", "w") as out:
                        cmd = ["-m", "tools.netem.tools", "udp-tap", "--ports", ports]
                        taps.append(link.python_in(side, cmd, stdout=out))
            for i in range(a.rounds):
                row: dict[str, Any] = {"round": i}
                if "restart" not in skip:
                    b.restart()
                    row["restart"] = {s.name: b.res[s.name]["restart"] for s in b.systems}
                    time.sleep(1.0)
                if late is not None:
                    after = a.end_after_attempt is not None
                    row["blackout"] = {s.name: late_blackout(b, s, late, after_start=after) for s in b.systems}
                    time.sleep(1.0)
                elif "blackout" not in skip:
                    b.args.blackout_extra = extras[i % len(extras)]
                    b.blackout()
                    row["blackout"] = {s.name: b.res[s.name]["blackout"] for s in b.systems}
                    time.sleep(1.0)
                rows.append(row)
        finally:
            for tap in taps:
                tap.terminate()
            if b.agent is not None:
                b.agent.p.terminate()
            b.groups.stop_all()
    print(f"load at start {load}, at end {[round(x, 2) for x in os.getloadavg()]}")
    for s in b.systems:
        for phase, key in (("restart", "ms_from_spawn"), ("blackout", "ms_from_blackout_end")):
            runs = [r[phase][s.name] for r in rows if phase in r]
            if not runs:
                continue
            ms = [round(x[key], 1) if key in x else None for x in runs]
            resumed = [x.get("resumed") for x in runs]
            ok = [x for x in ms if x is not None]
            med = round(statistics.median(ok), 1) if ok else None
            print(f"{s.name:24} {phase:8} median {med} ms  each {ms}  resumed {resumed}")
    if a.out:
        doc = {"rows": rows, "wall_minus_monotonic": time.time() - time.monotonic(), "work": str(work), "load": load}
        Path(a.out).write_text(json.dumps(doc, indent=1, default=str))
    if a.keep:
        log(f"work directory kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
