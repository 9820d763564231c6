"""``python -m benchmarks.micro.reconnect``: CPU of a resumed 0-RTT reconnect, per end and phase.

What a blackout's end costs (link_latency.txt section 4): the session died, the client end dials
again with the ticket of the last one and sends the waiting request as 0-RTT; the server end
answers the handshake and, once the origin replied, the response (0.5-RTT); the client end reads
the handshake answer, then the response. Both ends are real :class:`Session` objects built from
``EndpointSettings`` (the linkbench "natural" transport: BBR, initial_window = BDP, initial_rtt 50;
the server end with a ticket key file, as linkbench runs it), joined in memory: each phase is run
by hand, as one loop iteration of the real end would run it (``datagram_received`` for each
datagram of the batch, then the ``transmit`` the session would have scheduled). Not included: the
sockets, the server end's admission screening, the origin connection (its response is written at
once), the dialer's bookkeeping.

Phases (wall time, ``perf_counter``; median of ``--rounds`` reconnects):

- ``c_send``:   client end: new connection + Session, connect with the ticket, the request opened
  (0-RTT), the transmit: Initial + 0-RTT datagram(s) out;
- ``s_answer``: server end: new connection + Session, those datagrams received, the transmit (the
  request handed to ``on_request``, the handshake answer built); ``s_out`` is when the answer was
  handed to the socket and ``s_request`` when ``on_request`` ran, from the phase's start;
- ``s_resp``:   server end: response headers + body sent, the transmit (the 0.5-RTT datagram);
- ``c_answer``: client end: the handshake answer received and its transmit (Finished);
- ``c_resp``:   client end: the response datagram received and its transmit (headers delivered);
- ``c_held``:   client end: the send its transmits left for a later loop step once its handshake
  completed with the request open (Session.transmit, DELIVER_FIRST_STEPS: the Finished and the
  ACKs, after the response was handed over); nothing when they sent at once.

``--cold``: before each reconnect, sleep ``--sleep`` s and write a ``--evict-mb`` buffer (caches and
branch predictors lose the process's working set, as in two processes that slept through a 7 s
blackout; this machine's L3 is larger than any buffer worth touching, so "cold-ish").

``--callgrind PHASE``: instruction count (callgrind ``Ir``) of that phase alone, of the last of
``--rounds`` reconnects (the earlier ones warm up Python's caches): the phase runs inside
``operator.call``, and valgrind collects only inside it (``--toggle-collect=_operator_call``);
``--out FILE`` keeps the callgrind file for ``callgrind_annotate``. ``--profile PHASE``: cProfile
of that phase over all rounds (top functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import operator
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENT_ADDR = ("192.0.2.1", 40000)
SERVER_ADDR = ("192.0.2.2", 4433)
PHASES = ("c_send", "s_answer", "s_resp", "c_answer", "c_resp", "c_held")
# --callgrind s_events: the server end's event handling inside s_answer alone (the 0-RTT request
# parsed and handed over); s_answer minus it is about what comes before the answer leaves when the
# events are handled after the answer (Session._answer_handshake), else what comes after it.
CALLGRIND_PARTS = PHASES + ("s_events",)
REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"origin.example:8080"),
    (b":path", b"/1k"),
    (b"user-agent", b"curl/8.5.0"),
    (b"accept", b"*/*"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"application/octet-stream"),
    (b"content-length", b"1024"),
    (b"date", b"Sun, 06 Dec 2026 11:00:00 GMT"),
]
BODY = bytes(1024)
TRANSPORT = """
[transport]
congestion_algorithm = "Bbr"
initial_window = 625000
initial_rtt = 50
max_idle_timeout = 5000
"""


class _Link:
    """One direction: the datagrams a session sent, kept until the harness delivers them."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.first_at = 0.0  # when the first datagram since the last take() was handed over

    def send(self, datagrams: list[bytes], _addr: Any) -> None:
        if not self.queue:
            self.first_at = time.perf_counter()
        self.queue.extend(bytes(d) for d in datagrams)

    def take(self) -> list[bytes]:
        out, self.queue = self.queue, []
        return out


def _transmit(session: Any) -> None:
    """The transmit the session scheduled (``transmit_soon``), run now in its place."""
    handle = session._transmit_handle
    if handle is not None:
        handle.cancel()
    session.transmit()


class Harness:
    def __init__(self, work: Path) -> None:
        from ptproxy.ops.config import load
        from ptproxy.ops.demo import demo_configs
        from ptproxy.tunnel.endpoint import EndpointSettings
        from ptproxy.tunnel.tls import client_auth_policy, load_material

        client_toml, server_toml = demo_configs(work, 1, 2, 3)
        client_toml.write_text(client_toml.read_text() + TRANSPORT)
        server_toml.write_text(
            server_toml.read_text() + f'ticket_key_file = "{work / "tickets.key"}"\n' + TRANSPORT
        )
        self.ccfg, self.scfg = load(client_toml), load(server_toml)
        self.cset = EndpointSettings.build(self.ccfg, load_material(self.ccfg))
        smat = load_material(self.scfg)
        self.sset = EndpointSettings.build(self.scfg, smat, client_auth_policy(self.scfg, smat))
        self.store = self.sset.ticket_store()
        self.up, self.down = _Link(), _Link()
        self.ticket: Any = None
        self.client: Any = None
        self.server: Any = None
        self.sstream: Any = None
        self.cstream: Any = None
        self.s_request = 0.0
        self.request_at = 0.0  # when the server end's on_request ran (perf_counter)
        self.resumed: list[bool] = []
        self._answer: list[bytes] = []
        self._resp: list[bytes] = []

    def _session(self, cfg: Any, quic: Any, link: _Link, peer: Any, **kw: Any) -> Any:
        from ptproxy.tunnel.session import Session

        return Session(
            quic,
            link.send,
            number=1,
            peer=peer,
            send_window=cfg.transport.effective_send_window,
            keep_alive_interval=cfg.transport.keep_alive_interval / 1000.0,
            **kw,
        )

    def _ticket(self, ticket: Any) -> None:
        self.ticket = ticket

    # -- the phases ------------------------------------------------------------------------------

    def c_send(self) -> None:
        quic = self.cset.new_connection(session_ticket_handler=self._ticket)
        quic.set_route_mtu(1500)
        self.client = self._session(self.ccfg, quic, self.up, SERVER_ADDR)
        ticket, self.ticket = self.ticket, None
        self.cset.quic_config.session_ticket = ticket
        try:
            self.client.connect(SERVER_ADDR)
        finally:
            self.cset.quic_config.session_ticket = None
        self.cstream = self.client.open_stream(REQUEST, True)
        _transmit(self.client)

    def s_answer(self) -> None:
        from aioquic.buffer import Buffer
        from aioquic.quic.packet import pull_quic_header

        t0 = time.perf_counter()
        datagrams = self.up.take()
        header = pull_quic_header(Buffer(data=datagrams[0]), host_cid_length=8)
        quic = self.sset.new_connection(
            original_destination_connection_id=header.destination_cid, tickets=self.store
        )
        quic.set_route_mtu(1500)

        def on_request(stream: Any) -> None:
            self.sstream = stream
            self.request_at = time.perf_counter()
            self.s_request = self.request_at - t0

        self.server = self._session(self.scfg, quic, self.down, CLIENT_ADDR, on_request=on_request)
        for data in datagrams:
            self.server.datagram_received(data, CLIENT_ADDR)
        _transmit(self.server)

    def s_resp(self) -> None:
        self.sstream.send_headers(RESPONSE)
        self.sstream.send_final(BODY)
        _transmit(self.server)

    def c_answer(self) -> None:
        for data in self._answer:
            self.client.datagram_received(data, SERVER_ADDR)
        _transmit(self.client)

    def c_resp(self) -> None:
        for data in self._resp:
            self.client.datagram_received(data, SERVER_ADDR)
        _transmit(self.client)

    def c_held(self) -> None:
        if self.client._transmit_handle is not None:
            _transmit(self.client)

    # -- one reconnect ---------------------------------------------------------------------------

    async def settle(self) -> None:
        """Deliver whatever is left both ways until both ends are quiet (tickets, ACKs, ...)."""
        for _ in range(20):
            await asyncio.sleep(0)
            up, down = self.up.take(), self.down.take()
            if not up and not down:
                if self.client._transmit_handle is None and (
                    self.server is None or self.server._transmit_handle is None
                ):
                    break
                continue  # a send held for a loop step (Session.transmit) is still to come
            if self.server is not None:
                for data in up:
                    self.server.datagram_received(data, CLIENT_ADDR)
            for data in down:
                self.client.datagram_received(data, SERVER_ADDR)

    async def reconnect(self, run: Any) -> dict[str, float]:
        """One resumed reconnect (a full handshake when there is no ticket yet); phase times, s."""
        times: dict[str, float] = {}
        pc = time.perf_counter
        self.sstream = None
        t = pc()
        run(self.c_send)
        times["c_send"] = pc() - t
        t = pc()
        run(self.s_answer)
        times["s_answer"] = pc() - t
        times["s_request"] = self.s_request
        times["s_out"] = self.down.first_at - t
        self._answer = self.down.take()
        if self.sstream is None:  # a full handshake: the request comes once it completed
            self.client.datagram_received(self._answer[0], SERVER_ADDR)
            for data in self._answer[1:]:
                self.client.datagram_received(data, SERVER_ADDR)
            _transmit(self.client)
            await self.settle()
            self._answer = []
        t = pc()
        run(self.s_resp)
        times["s_resp"] = pc() - t
        self._resp = self.down.take()
        t = pc()
        run(self.c_answer)
        times["c_answer"] = pc() - t
        t = pc()
        run(self.c_resp)
        times["c_resp"] = pc() - t
        t = pc()
        run(self.c_held)
        times["c_held"] = pc() - t
        events = list(self.cstream._events)
        if not events or type(events[0]).__name__ != "Headers":
            raise RuntimeError(f"no response at the client end: {events!r}")
        await self.settle()
        if self.ticket is None:
            raise RuntimeError("no new ticket")
        self.resumed.append(bool(self.client.session_resumed and self.client.early_data_accepted))
        # The blackout: both ends lose the session without a word.
        self.client.abort("blackout")
        self.server.abort("blackout")
        self.up.take()
        self.down.take()
        return times


def _events_in_operator_call(phase: Any) -> None:
    """Run ``phase`` with every Session's ``_process_events`` inside ``operator.call``."""
    from ptproxy.tunnel.session import Session

    original = Session._process_events

    def wrapped(self: Any) -> None:
        operator.call(original, self)

    Session._process_events = wrapped  # type: ignore[method-assign]
    try:
        phase()
    finally:
        Session._process_events = original  # type: ignore[method-assign]


def _evict(megabytes: int) -> None:
    if megabytes > 0:
        buf = bytearray(megabytes << 20)
        for i in range(0, len(buf), 64):
            buf[i] = 1


async def _main(a: argparse.Namespace) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="ptproxy-reconnect-") as tmp:
        h = Harness(Path(tmp))
        collected: dict[str, list[float]] = {}
        prof = cProfile.Profile() if a.profile else None
        warmup = 3
        for i in range(warmup + a.rounds):
            measured = i >= warmup
            last = i == warmup + a.rounds - 1

            def run(phase: Any, _m: bool = measured, _last: bool = last) -> None:
                name = phase.__name__
                if a.callgrind == "s_events" and name == "s_answer" and _last:
                    _events_in_operator_call(phase)
                elif a.callgrind == name and _last:
                    operator.call(phase)
                elif prof is not None and a.profile == name and _m:
                    prof.runcall(phase)
                else:
                    phase()

            if measured and a.cold:
                await asyncio.sleep(a.sleep)
                _evict(a.evict_mb)
            times = await h.reconnect(run)
            if measured:
                for k, v in times.items():
                    collected.setdefault(k, []).append(v)
            gc.collect()
        if not all(h.resumed[warmup:]):
            raise RuntimeError(f"not every reconnect resumed with 0-RTT: {h.resumed}")
        if prof is not None:
            pstats.Stats(prof).sort_stats(a.sort).print_stats(a.top)
        return collected


def _callgrind(a: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or str(Path(tmp) / "callgrind.out")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--collect-atstart=no",
            "--toggle-collect=_operator_call",
            sys.executable,
            "-m",
            "benchmarks.micro.reconnect",
            "--child",
            "--rounds",
            str(a.rounds),
            "--callgrind",
            a.callgrind,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            print(run.stdout, run.stderr[-3000:], file=sys.stderr)
            return 1
        mode = "pure" if os.environ.get("PTPROXY_NO_EXTENSIONS") else "compiled"
        print(f"{a.callgrind} ({mode}): {int(found.group(1)):,} instructions")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.micro.reconnect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.2)
    ap.add_argument("--evict-mb", type=int, default=32)
    ap.add_argument("--callgrind", choices=CALLGRIND_PARTS, default=None)
    ap.add_argument("--out", default=None, help="with --callgrind: keep the callgrind file here")
    ap.add_argument("--profile", choices=PHASES, default=None)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument(
        "--sort", default="tottime", help="with --profile: pstats sort key (tottime, cumulative)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.callgrind and not a.child:
        return _callgrind(a)
    collected = asyncio.run(_main(a))
    if a.child or a.profile:
        return 0
    mode = "pure" if os.environ.get("PTPROXY_NO_EXTENSIONS") else "compiled"
    load = os.getloadavg()[0]
    kind = f"cold (sleep {a.sleep} s, {a.evict_mb} MB touched)" if a.cold else "warm"
    print(
        f"# resumed 0-RTT reconnect, {mode}, {kind}, {a.rounds} rounds, load {load:.2f}: ms median (min)"
    )
    for k in ("c_send", "s_answer", "s_out", "s_request", "s_resp", "c_answer", "c_resp", "c_held"):
        v = collected[k]
        print(f"{k:<10} {statistics.median(v) * 1e3:7.3f} ({min(v) * 1e3:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
