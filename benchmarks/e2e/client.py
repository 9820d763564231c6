"""The Python load client's CLI (run as ``python -m benchmarks.e2e.client``, inside namespace a
on an emulated link), over :mod:`benchmarks.harness.http`: sequential requests over one
keep-alive connection, big downloads and uploads. Prints one JSON object on stdout.

    latency  HOST PORT PATH --n N [--warmup W] [--probe]
    download HOST PORT PATH --n N
    upload   HOST PORT PATH --bytes B --n N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from benchmarks.harness.http import Conn, Failure


async def latency(a: argparse.Namespace) -> dict[str, object]:
    """``--probe``: the first request's time includes the connect and every request carries
    ``X-Bench-Probe`` (Caddy logs only those)."""
    extra = "X-Bench-Probe: 1\r\n" if a.probe else ""
    conn = Conn(a.host, a.port)
    out: list[float] = []
    errors = 0
    try:
        if not a.probe:
            await conn.connect()
        for i in range(a.warmup + a.n):
            r = await conn.request("GET", a.path, extra=extra)
            errors += r.status != 200
            if i >= a.warmup:
                out.append(r.ms)
    finally:
        conn.close()
    return {"latencies_ms": out, "errors": errors}


async def transfer(a: argparse.Namespace, upload: bool) -> dict[str, object]:
    conn = Conn(a.host, a.port)
    secs: list[float] = []
    sizes: list[int] = []
    errors = 0
    try:
        for _ in range(a.n):
            r = await conn.request("POST", a.path, a.bytes) if upload else await conn.request("GET", a.path)
            secs.append(r.t1 - r.t0)
            sizes.append(a.bytes if upload else r.length)
            errors += r.status != 200
    finally:
        conn.close()
    return {"seconds": secs, "bytes": sizes, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e.client")
    p.add_argument("mode", choices=["latency", "download", "upload"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("path")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--bytes", type=int, default=10 * 1024 * 1024)
    p.add_argument("--probe", action="store_true", help="count connect time; send X-Bench-Probe")
    a = p.parse_args(argv)
    try:
        run = latency(a) if a.mode == "latency" else transfer(a, upload=a.mode == "upload")
        res = asyncio.run(run)
    except (Failure, OSError, ValueError, IndexError) as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(res, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
