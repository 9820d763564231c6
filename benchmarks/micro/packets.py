"""``python -m benchmarks.micro.packets``: µs per datagram on the QUIC packet path, compiled vs pure.

A client and a server ``PatchedQuicConnection`` joined in memory (no sockets, a simulated clock),
mutually authenticated with a throw-away demo PKI. With 1, 8 and 64 streams open (each has sent a
few bytes and stays open), the client sends a bulk body on one of them and the server acknowledges.
The figures, per datagram carrying data, CPU time (``process_time``):

- ``send``: the client's ``datagrams_to_send`` (build, encrypt, protect the header, record);
- ``recv``: the server's ``receive_datagram`` (unprotect, decrypt, parse, buffer);
- ``ack``: the return path shared out per data datagram (the server writing its ACKs, the client
  reading them: loss recovery, stream send buffers, congestion control);
- ``total``: the three together.

Each mode runs in its own interpreter (the twins are chosen at import): ``compiled`` as installed and
``pure`` with ``PTPROXY_NO_EXTENSIONS=1`` (aioquic's own objects). ``--save`` writes the table to
benchmarks/results/packets.txt. The issue's aim: the cost flat in the number of open streams.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results" / "packets.txt"
STREAM_COUNTS = (1, 8, 64)
CLIENT_ADDR = ("10.0.0.1", 1234)
SERVER_ADDR = ("10.0.0.2", 4433)


def _pair(work: Path) -> tuple[Any, Any, list[float]]:
    """A connected (client, server) pair and its clock (a one-element list, seconds)."""
    from aioquic import tls
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    from ptproxy.ops.devcerts import make_demo_pki
    from ptproxy.tunnel.aioquic import ClientAuthPolicy, FlowSettings, PatchedQuicConnection

    pki = make_demo_pki(work)
    flow = FlowSettings(
        stream_receive_window=16 << 20,
        receive_window=64 << 20,
        max_concurrent_streams=200,
        congestion_algorithm="NewReno",
        initial_window=1 << 20,
    )
    ca = pki.ca.read_bytes()

    def conf(is_client: bool) -> QuicConfiguration:
        c = QuicConfiguration(is_client=is_client, alpn_protocols=H3_ALPN, max_datagram_size=1452)
        leaf = pki.client if is_client else pki.server
        c.load_cert_chain(str(leaf.cert), str(leaf.key))
        c.cadata = ca
        if is_client:
            c.server_name = pki.server_name
        return c

    def verify(cert: Any, chain: list[Any]) -> None:
        tls.verify_certificate(certificate=cert, chain=chain, server_name=pki.client_name, cadata=ca)

    client = PatchedQuicConnection(configuration=conf(True), flow=flow)
    server = PatchedQuicConnection(
        configuration=conf(False),
        flow=flow,
        client_auth=ClientAuthPolicy(verify),
        original_destination_connection_id=client.original_destination_connection_id,
    )
    clock = [1000.0]
    client.connect(SERVER_ADDR, now=clock[0])
    for _ in range(20):
        _exchange(client, server, clock)
    return client, server, clock


def _exchange(client: Any, server: Any, clock: list[float]) -> None:
    for data, _ in client.datagrams_to_send(now=clock[0]):
        server.receive_datagram(data, CLIENT_ADDR, now=clock[0])
    for data, _ in server.datagrams_to_send(now=clock[0]):
        client.receive_datagram(data, SERVER_ADDR, now=clock[0])
    clock[0] += 0.001
    for conn in (client, server):
        at = conn.get_timer()
        if at is not None and at <= clock[0]:
            conn.handle_timer(clock[0])
    while client.next_event() is not None or server.next_event() is not None:
        pass


def measure(streams: int, megabytes: int) -> dict[str, float]:
    """Timings of one bulk transfer with ``streams`` open streams."""
    from ptproxy.tunnel.aioquic import stream_send_buffered

    with tempfile.TemporaryDirectory(prefix="ptproxy-packets-") as tmp:
        client, server, clock = _pair(Path(tmp))
        ids = []
        for _ in range(streams):
            # The next ID only moves on once the stream exists: open each before asking again.
            sid = client.get_next_available_stream_id()
            client.send_stream_data(sid, b"open")
            ids.append(sid)
            _exchange(client, server, clock)
        chunk = bytes(64 * 1024)
        total = megabytes << 20
        queued = 0
        t_send = t_recv = t_ack = 0.0
        datagrams = 0
        pt = time.process_time
        while queued < total or stream_send_buffered(client, ids[0]):
            while queued < total and stream_send_buffered(client, ids[0]) < (1 << 20):
                client.send_stream_data(ids[0], chunk)
                queued += len(chunk)
            now = clock[0]
            t0 = pt()
            out = client.datagrams_to_send(now=now)
            t1 = pt()
            for data, _ in out:
                server.receive_datagram(data, CLIENT_ADDR, now=now)
            t2 = pt()
            back = server.datagrams_to_send(now=now + 0.0005)
            for data, _ in back:
                client.receive_datagram(data, SERVER_ADDR, now=now + 0.0005)
            t3 = pt()
            t_send += t1 - t0
            t_recv += t2 - t1
            t_ack += t3 - t2
            datagrams += len(out)
            clock[0] += 0.001
            for conn in (client, server):
                at = conn.get_timer()
                if at is not None and at <= clock[0]:
                    conn.handle_timer(clock[0])
            while server.next_event() is not None or client.next_event() is not None:
                pass
        us = 1e6 / max(datagrams, 1)
        return {
            "streams": streams,
            "datagrams": datagrams,
            "send": t_send * us,
            "recv": t_recv * us,
            "ack": t_ack * us,
            "total": (t_send + t_recv + t_ack) * us,
        }


def _child(megabytes: int, repeat: int) -> None:
    from ptproxy.tunnel.aioquic import quicpath

    rows = []
    for n in STREAM_COUNTS:
        runs = [measure(n, megabytes) for _ in range(repeat)]
        rows.append(min(runs, key=lambda r: r["total"]))
    print(json.dumps({"implementation": quicpath.IMPLEMENTATION, "rows": rows}))


def _run_mode(pure: bool, megabytes: int, repeat: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PTPROXY_NO_EXTENSIONS", None)
    if pure:
        env["PTPROXY_NO_EXTENSIONS"] = "1"
    cmd = [sys.executable, "-m", "benchmarks.micro.packets", "--child", "--megabytes", str(megabytes), "--repeat", str(repeat)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro.packets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megabytes", type=int, default=8, help="bulk body per run (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per stream count, the best kept (default 3)")
    ap.add_argument("--save", action="store_true", help=f"also write the table to {RESULTS}")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child(a.megabytes, a.repeat)
        return 0
    modes = {"compiled": _run_mode(False, a.megabytes, a.repeat), "pure": _run_mode(True, a.megabytes, a.repeat)}
    load = os.getloadavg()
    lines = [
        f"# µs of CPU per data datagram (1452 B), in-memory PatchedQuicConnection pair, {a.megabytes} MB bulk per run, best of {a.repeat}",
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"{'mode':<9} {'streams':>7} {'datagrams':>9} {'send':>8} {'recv':>8} {'ack':>8} {'total':>8}",
    ]
    for mode, res in modes.items():
        label = mode if res["implementation"] == mode else f"{mode}?{res['implementation']}"
        for r in res["rows"]:
            lines.append(f"{label:<9} {r['streams']:>7} {r['datagrams']:>9} {r['send']:>8.1f} {r['recv']:>8.1f} {r['ack']:>8.1f} {r['total']:>8.1f}")
    for c_row, p_row in zip(modes["compiled"]["rows"], modes["pure"]["rows"], strict=True):
        lines.append(f"pure/compiled at {c_row['streams']:>2} streams: {p_row['total'] / c_row['total']:.2f}x")
    text = "\n".join(lines)
    print(text)
    if a.save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
