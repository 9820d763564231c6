"""``python -m benchmarks.micro.packets_ir``: instructions per datagram on the QUIC packet path.

Wall and CPU time on a shared 2-core machine move by 10-30 % between runs; instruction counts do
not. This runs the in-memory pair of :mod:`benchmarks.micro.packets` under ``valgrind --tool=callgrind``
twice per stream count, with a small and a large amount of work, and divides the difference in
instructions by the difference in datagrams: set-up (certificates, handshake, imports) cancels out.

- ``bulk``: a bulk body on one stream with 1, 8 and 64 streams open; instructions per data datagram
  for the whole path (send, receive, the ACK return path), as ``packets.py``'s ``total``;
- ``idle``: ``datagrams_to_send`` with nothing to send (an event loop's transmit after a timer or a
  datagram that needs no answer); instructions per call.

``--child`` runs one measurement in this process (what valgrind runs); ``PTPROXY_NO_EXTENSIONS=1``
in the environment selects the pure twins.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmarks.micro.callgrind import child_instructions, marginal_of

STREAM_COUNTS = (1, 8, 64)
# (small, large) amounts of work per scenario: megabytes of bulk, or idle calls.
SIZES = {"bulk": (1, 3), "idle": (200, 1200)}


def _child(scenario: str, streams: int, amount: int) -> int:
    """Run one scenario; the count of datagrams (bulk) or calls (idle) it made."""
    from benchmarks.micro.packets import _exchange, _pair, measure

    if scenario == "bulk":
        return int(measure(streams, amount)["datagrams"])
    with tempfile.TemporaryDirectory(prefix="ptproxy-packets-ir-") as tmp:
        client, server, clock = _pair(Path(tmp))
        for _ in range(streams):
            client.send_stream_data(client.get_next_available_stream_id(), b"open")
            _exchange(client, server, clock)
        for _ in range(5):  # let every ACK and credit update settle
            clock[0] += 0.01
            _exchange(client, server, clock)
        now = clock[0]
        for _ in range(amount):
            client.datagrams_to_send(now=now)
        return amount


def _instructions(scenario: str, streams: int, amount: int) -> tuple[int, int]:
    """(instructions, datagrams or calls) of one child run under callgrind."""
    return child_instructions("benchmarks.micro.packets_ir", [scenario, str(streams), str(amount)])


def marginal(scenario: str, streams: int) -> float:
    """Instructions per datagram (bulk) or per call (idle), set-up cancelled out."""
    return marginal_of(lambda amount: _instructions(scenario, streams, amount), *SIZES[scenario])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro.packets_ir", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("SCENARIO", "STREAMS", "AMOUNT"), help=argparse.SUPPRESS)
    ap.add_argument("--scenarios", default="bulk,idle", help="comma-separated: bulk, idle (default both)")
    ap.add_argument("--streams", default=",".join(map(str, STREAM_COUNTS)), help="open streams (default 1,8,64)")
    a = ap.parse_args(argv)
    if a.child:
        print(_child(a.child[0], int(a.child[1]), int(a.child[2])))
        return 0
    mode = "pure" if os.environ.get("PTPROXY_NO_EXTENSIONS") == "1" else "compiled"
    print(f"# instructions (callgrind Ir) per data datagram (bulk) / per empty datagrams_to_send (idle), {mode}")
    for scenario in a.scenarios.split(","):
        for streams in (int(s) for s in a.streams.split(",")):
            print(f"{mode:<9} {scenario:<5} {streams:>3} streams {marginal(scenario, streams):>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
