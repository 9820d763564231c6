"""``python -m benchmarks.micro [--json out.json]``: pure vs compiled twin, one line per hot path."""

from __future__ import annotations

import argparse
import json
import platform
import sys

from . import TARGET_RATIO, cases, machine, run_case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument(
        "--repeat", type=int, default=9, help="timing repeats; the best is kept (default 9)"
    )
    ap.add_argument(
        "--min-time", type=float, default=0.05, help="seconds per repeat (default 0.05)"
    )
    ap.add_argument(
        "--only", metavar="SUBSTRING", help="run only cases whose name contains SUBSTRING"
    )
    args = ap.parse_args(argv)

    selected = [c for c in cases() if not args.only or args.only in c.name]
    results = []
    width = max((len(c.name) for c in selected), default=10)
    print(
        f"{'hot path':<{width}}  {'path':<7}  {'pure ns':>9}  {'compiled ns':>11}  {'floor ns':>8}"
        f"  {'ratio':>6}  {'above floor':>11}"
    )
    for case in selected:
        try:
            r = run_case(case, repeat=args.repeat, min_time=args.min_time)
        except ImportError as exc:
            print(f"{case.name:<{width}}  skipped: {exc}", file=sys.stderr)
            continue
        results.append(r)
        if r.ratio >= TARGET_RATIO:
            flag = ""
        elif r.at_floor:
            flag = "  (compiled twin at the floor: the copy/call itself bounds the ratio)"
        elif r.meets_target:
            flag = f"  (raw ratio bounded by the floor; {TARGET_RATIO:g}x above it)"
        else:
            flag = f"  (below {TARGET_RATIO:g}x)"
        above = "at floor" if r.ratio_above_floor is None else f"{r.ratio_above_floor:.2f}x"
        above = f"{above:>11}"
        print(
            f"{r.name:<{width}}  {r.path:<7}  {r.pure_ns:>9.1f}  {r.compiled_ns:>11.1f}"
            f"  {r.floor_ns:>8.1f}  {r.ratio:>5.2f}x  {above}{flag}"
        )

    if args.json:
        doc = {
            "machine": machine(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "target_ratio": TARGET_RATIO,
            "results": [r.as_json() for r in results],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
