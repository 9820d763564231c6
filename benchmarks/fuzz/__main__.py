"""Long-run fuzzing: ``python -m benchmarks.fuzz --minutes N [--target request|response|chunk|all]``.

Runs the hypothesis targets of :mod:`tools.fuzz_targets` (the same ones tests/fuzz runs with
a bounded budget) in rounds with fresh randomness until the time is up, against both twins, and
prints per-target example counts. A crash prints hypothesis' minimal falsifying example and exits
1: turn it into a regression test in tests/fuzz. (atheris is not used: it does not install here.)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import fuzz_targets as t


def _twins() -> list[tuple[str, Any, Any]]:
    out = [("py", importlib.import_module("ptproxy.wire._fieldcodec_py"), importlib.import_module("ptproxy.wire._chunked_py"))]
    try:
        out.append(("c", importlib.import_module("ptproxy._speedups.fieldcodec"), importlib.import_module("ptproxy._speedups.chunked")))
    except ImportError:
        print("compiled twins not built: pure twins only", file=sys.stderr)
    return out


def build(name: str, fc: Any, ck: Any, counter: dict[str, int]) -> Callable[[], None]:
    def count() -> None:
        counter[name] = counter.get(name, 0) + 1

    if name.startswith("request"):
        @given(data=t.raw_requests(), cuts=t.cuts_strategy)
        def run(data: bytes, cuts: list[int]) -> None:
            count()
            t.request_target(data, cuts, fc, ck)
    elif name.startswith("response"):
        @given(data=t.raw_responses(), cuts=t.cuts_strategy, method=st.sampled_from([b"GET", b"HEAD", b"POST"]),
               eof=st.booleans())
        def run(data: bytes, cuts: list[int], method: bytes, eof: bool) -> None:
            count()
            t.response_target(data, cuts, method, eof, fc, ck)
    else:
        @given(
            chunks=st.lists(st.binary(min_size=1, max_size=2000), max_size=8),
            cuts=st.lists(st.lists(st.integers(0, 2500), max_size=6), min_size=8, max_size=8),
            limit=st.integers(1, 4096),
            trailers=st.lists(st.tuples(st.sampled_from([b"X-A", b"Checksum", b"T"]),
                                        st.sampled_from([b"", b"1", b"a b", b"\x80"])), max_size=3),
        )
        def run(chunks: list[bytes], cuts: list[list[int]], limit: int, trailers: list[tuple[bytes, bytes]]) -> None:
            count()
            t.chunk_target(ck, chunks, cuts, limit, trailers)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--target", choices=["request", "response", "chunk", "all"], default="all")
    ap.add_argument("--round", type=int, default=2000, help="examples per round and target")
    args = ap.parse_args(argv)
    names = ["request", "response", "chunk"] if args.target == "all" else [args.target]
    counter: dict[str, int] = {}
    deadline = time.monotonic() + args.minutes * 60
    started = time.monotonic()
    rounds = 0
    cfg = settings(max_examples=args.round, deadline=None, derandomize=False, database=None,
                   suppress_health_check=list(HealthCheck), print_blob=True)
    while time.monotonic() < deadline:
        rounds += 1
        for twin, fc, ck in _twins():
            for name in names:
                if time.monotonic() >= deadline:
                    break
                key = f"{name}[{twin}]"
                try:
                    cfg(build(key, fc, ck, counter))()
                except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the minimal failing example
                    print(f"CRASH in {key} after {time.monotonic() - started:.0f}s: {type(exc).__name__}: {exc}",
                          file=sys.stderr)
                    return 1
    took = time.monotonic() - started
    print(f"fuzzed {took / 60:.1f} min, {rounds} rounds, no crash")
    for key, n in sorted(counter.items()):
        print(f"  {key}: {n} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
