"""CLI: ``python -m benchmarks.soak --minutes N [--restart-every S] [--json PATH]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .runner import SoakOptions, format_report, run_soak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    ap.add_argument("--restart-every", type=float, default=180.0,
                    help="seconds between server-end restarts; 0: never (default 180)")
    ap.add_argument("--restart-signal", choices=["INT", "TERM", "KILL"], default="INT",
                    help="how the server end is stopped before each restart (default INT)")
    ap.add_argument("--concurrency", type=int, default=12, help="concurrent clients (default 12)")
    ap.add_argument("--warmup", type=float, default=60.0,
                    help="seconds of load before the baseline RSS/fd sample (default 60)")
    ap.add_argument("--large-max", type=int, default=8 << 20, help="largest body, bytes")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="keep configs and logs here")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    args = ap.parse_args(argv)
    opts = SoakOptions(
        minutes=args.minutes,
        restart_every=args.restart_every,
        restart_signal=args.restart_signal,
        concurrency=args.concurrency,
        warmup=args.warmup,
        large_max=args.large_max,
        seed=args.seed,
        workdir=args.workdir,
    )
    report = asyncio.run(run_soak(opts))
    text = format_report(report)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
