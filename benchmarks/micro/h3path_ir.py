"""``python -m benchmarks.micro.h3path_ir``: instructions per request on the HTTP/3 request path.

Load-independent (callgrind instruction counts), in the manner of :mod:`benchmarks.micro.packets_ir`:
each scenario runs twice under ``valgrind --tool=callgrind``, with a small and a large number of
requests, and the difference in instructions divided by the difference in requests is the cost of
one request (set-up, certificates, handshake and imports cancel out).

- ``exchange``: a client and a server ``PatchedQuicConnection`` joined in memory (as in
  :mod:`benchmarks.micro.packets`, simulated clock), each with a ``PatchedH3Connection``; one
  request after another: the client sends request headers (GET, FIN), the server answers with
  response headers, a 100-byte body and a bare FIN (``finish_stream``, as the session does), the
  client reads it all. Everything both ends do: QUIC and HTTP/3.
- ``h3``: the HTTP/3 receive side alone: the ``StreamDataReceived`` events of one such exchange,
  recorded, replayed into both ends' ``handle_event`` on a fresh stream each time.

Modes (each in its own interpreter): ``compiled`` (as installed), ``no-h3path`` (compiled, but the
compiled request-stream methods taken off PatchedH3Connection again: the figure before them) and
``pure`` (``PTPROXY_NO_EXTENSIONS=1``: aioquic's and h3.py's code throughout).
``--child`` runs one measurement in this process (what valgrind runs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.micro.callgrind import child_instructions, marginal_of

# (small, large) numbers of requests per scenario.
SIZES = {"exchange": (20, 120), "h3": (200, 1200)}
MODES = ("compiled", "no-h3path", "pure")
REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"origin.example:8080"),
    (b":path", b"/bytes/100"),
    (b"user-agent", b"curl/8.5.0"),
    (b"accept", b"*/*"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"application/octet-stream"),
    (b"content-length", b"100"),
    (b"date", b"Sun, 06 Dec 2026 11:00:00 GMT"),
    (b"server", b"origin"),
]
BODY = bytes(range(100))


class _Pair:
    """The in-memory pair, each end with its HTTP/3 connection; what each end's h3 received."""

    def __init__(self, work: Path) -> None:
        from benchmarks.micro.packets import _pair
        from ptproxy.tunnel.aioquic import PatchedH3Connection

        self.client, self.server, self.clock = _pair(work)
        self.hc = PatchedH3Connection(self.client)
        self.hs = PatchedH3Connection(self.server)
        self.recorded: list[tuple[str, Any]] | None = None
        self.done = False
        self.pump()

    def _events(self, end: str, quic: Any, h3: Any) -> None:
        from aioquic.h3.events import HeadersReceived
        from aioquic.quic.events import StreamDataReceived

        from ptproxy.tunnel.aioquic import DataFrame

        while (event := quic.next_event()) is not None:
            if self.recorded is not None and isinstance(event, StreamDataReceived):
                self.recorded.append((end, event))
            for ev in h3.handle_event(event):
                if end == "server" and isinstance(ev, HeadersReceived):
                    h3.send_headers(ev.stream_id, RESPONSE)
                    h3.send_data(ev.stream_id, BODY, end_stream=False)
                    h3.finish_stream(ev.stream_id)
                elif end == "client" and isinstance(ev, DataFrame) and ev.stream_ended:
                    self.done = True

    def pump(self) -> None:
        from benchmarks.micro.packets import CLIENT_ADDR, SERVER_ADDR

        now = self.clock[0]
        for data, _ in self.client.datagrams_to_send(now=now):
            self.server.receive_datagram(data, CLIENT_ADDR, now=now)
        self._events("server", self.server, self.hs)
        for data, _ in self.server.datagrams_to_send(now=now):
            self.client.receive_datagram(data, SERVER_ADDR, now=now)
        self._events("client", self.client, self.hc)
        self.clock[0] += 0.001
        for conn in (self.client, self.server):
            at = conn.get_timer()
            if at is not None and at <= self.clock[0]:
                conn.handle_timer(self.clock[0])

    def request(self) -> None:
        stream_id = self.client.get_next_available_stream_id()
        self.done = False
        self.hc.send_headers(stream_id, REQUEST, end_stream=True)
        for _ in range(50):
            self.pump()
            if self.done:
                break
        else:
            raise RuntimeError("no response")
        for _ in range(3):  # the ACKs and held QPACK instructions go out: the same for each request
            self.pump()


def _child(mode: str, scenario: str, requests: int) -> int:
    """Run ``requests`` requests of one scenario in this process; the count made."""
    from aioquic.quic.events import StreamDataReceived

    from ptproxy.tunnel.aioquic import PatchedH3Connection, h3path

    if mode == "no-h3path":  # the Python methods h3path.install replaced, back on the class
        for name, method in h3path.INSTALLED.items():
            setattr(PatchedH3Connection, name, method)
    with tempfile.TemporaryDirectory(prefix="ptproxy-h3path-ir-") as tmp:
        pair = _Pair(Path(tmp))
        for _ in range(3):  # warm-up: the QPACK dynamic table fills, every path taken once
            pair.request()
        if scenario == "exchange":
            for _ in range(requests):
                pair.request()
            return requests
        pair.recorded = []
        pair.request()
        recorded = [(end, ev) for end, ev in pair.recorded if ev.stream_id % 4 == 0]
        base = recorded[0][1].stream_id
        ends = {"client": pair.hc, "server": pair.hs}
        for i in range(requests):
            stream_id = base + 4 * (i + 1) * 4096  # fresh request streams, never the live pair's
            for end, ev in recorded:
                ends[end].handle_event(StreamDataReceived(data=ev.data, end_stream=ev.end_stream, stream_id=stream_id))
            for h3 in ends.values():
                h3.forget_stream(stream_id)
        return requests


def _instructions(mode: str, scenario: str, requests: int) -> tuple[int, int]:
    """(instructions, requests) of one child run under callgrind."""
    env = dict(os.environ)
    env.pop("PTPROXY_NO_EXTENSIONS", None)
    if mode == "pure":
        env["PTPROXY_NO_EXTENSIONS"] = "1"
    return child_instructions("benchmarks.micro.h3path_ir", [mode, scenario, str(requests)], env)


def marginal(mode: str, scenario: str) -> float:
    """Instructions per request, set-up cancelled out."""
    return marginal_of(lambda requests: _instructions(mode, scenario, requests), *SIZES[scenario])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro.h3path_ir", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SCENARIO", "REQUESTS"), help=argparse.SUPPRESS)
    ap.add_argument("--scenarios", default="h3,exchange", help="comma-separated: h3, exchange (default both)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    a = ap.parse_args(argv)
    if a.child:
        print(_child(a.child[0], a.child[1], int(a.child[2])))
        return 0
    print("# instructions (callgrind Ir) per request: h3 = both ends' HTTP/3 receive path alone,")
    print("# exchange = a whole in-memory request/response (QUIC and HTTP/3, both ends)")
    for scenario in a.scenarios.split(","):
        for mode in a.modes.split(","):
            print(f"{scenario:<9} {mode:<10} {marginal(mode, scenario):>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
