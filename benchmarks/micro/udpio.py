"""``python -m benchmarks.micro.udpio [--json out.json]``: µs per datagram, batched vs one at a time.

Loopback UDP, 1200-byte datagrams (a QUIC packet), batches of 1, 16 and 64, each way:

* send: ``socket.sendto`` per datagram (what asyncio's transport does), the pure twin's
  ``send_batch``, the compiled twin's ``sendmmsg`` (``gso=False``) and ``sendmmsg`` + UDP GSO;
* receive: ``socket.recvfrom`` per datagram (exactly n calls), the pure twin's ``recv_batch`` (n + 1
  calls: it reads until EAGAIN), the compiled twin's ``recvmmsg`` and ``recvmmsg`` + UDP GRO (the
  queue filled by a GSO sender, so the kernel hands over glued datagrams).

On loopback a send also pays the kernel's delivery into the receiver's queue (it runs in the
sender's system call), so send figures include it; the receiver is drained, untimed, after each
batch so no figure is a drop. Each figure is the best of ``--repeat`` runs of ``--rounds`` batches.
Kept apart from the twin-ratio table of ``python -m benchmarks.micro``: the floor here is the
system call, not a C builtin.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType

SIZE = 1200
BATCHES = (1, 16, 64)

Send = Callable[[list[bytes]], int]
Recv = Callable[[int], int]


def _socket(gro: bool = False, twin: ModuleType | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # as root, past net.core.rmem_max: a batch must never be a drop
        s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    if gro and twin is not None:
        twin.enable_gro(s)
    return s


def _drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return n
        n += 1


def _best(run: Callable[[], float], repeat: int) -> float:
    return min(run() for _ in range(repeat))


def time_send(send: Send, sink: socket.socket, batch: int, rounds: int, repeat: int) -> float:
    """µs per datagram for ``send`` of ``batch`` datagrams (receiver drained, untimed)."""
    payload = [bytes([i & 0xFF]) * SIZE for i in range(batch)]

    def run() -> float:
        spent = 0
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            sent = send(payload)
            spent += time.perf_counter_ns() - t0
            if sent != batch:
                raise RuntimeError(f"sent {sent} of {batch}")
            _drain(sink)
        return spent / 1000 / (rounds * batch)

    return _best(run, repeat)


def time_recv(
    recv: Recv, fill: Callable[[list[bytes]], int], batch: int, rounds: int, repeat: int
) -> float:
    """µs per datagram for ``recv`` taking ``batch`` queued datagrams (queue filled, untimed)."""
    payload = [bytes([i & 0xFF]) * SIZE for i in range(batch)]

    def run() -> float:
        spent = 0
        for _ in range(rounds):
            fill(payload)
            t0 = time.perf_counter_ns()
            got = recv(batch)
            spent += time.perf_counter_ns() - t0
            if got != batch:
                raise RuntimeError(f"received {got} of {batch}")
        return spent / 1000 / (rounds * batch)

    return _best(run, repeat)


def measure(rounds: int, repeat: int) -> dict[str, dict[str, float]]:
    pure = importlib.import_module("ptproxy.tunnel._udpio_py")
    try:
        comp: ModuleType | None = importlib.import_module("ptproxy._speedups.udpio")
    except ImportError:
        comp = None
    caps = comp.capabilities() if comp is not None else pure.capabilities()
    src, sink = _socket(), _socket()
    dst = sink.getsockname()
    fd = src.fileno()
    sendto = src.sendto

    def per_datagram_send(payload: list[bytes]) -> int:
        for d in payload:
            sendto(d, dst)
        return len(payload)

    senders: dict[str, Send] = {
        "sendto x n": per_datagram_send,
        "pure send_batch": lambda p: pure.send_batch(src, p, dst),
    }
    if comp is not None:
        senders["sendmmsg"] = lambda p: comp.send_batch(fd, p, dst, gso=False)
        if caps["gso"]:
            senders["sendmmsg + GSO"] = lambda p: comp.send_batch(fd, p, dst, gso=True)

    results: dict[str, dict[str, float]] = {"send": {}, "receive": {}}
    for name, send in senders.items():
        for batch in BATCHES:
            results["send"][f"{name} @{batch}"] = time_send(send, sink, batch, rounds, repeat)

    # Receive: fill with the fastest plain sender; the GRO receiver is filled by a GSO sender.
    def fill_plain(payload: list[bytes]) -> int:
        return (comp or pure).send_batch(fd, payload, dst, gso=False)

    recvfrom = sink.recvfrom

    def per_datagram_recv(batch: int) -> int:
        for _ in range(batch):
            recvfrom(65535)
        return batch

    receivers: dict[str, tuple[Recv, Callable[[list[bytes]], int]]] = {
        "recvfrom x n": (per_datagram_recv, fill_plain),
        "pure recv_batch": (lambda n: len(pure.recv_batch(sink, 64)), fill_plain),
    }
    gro_sink: socket.socket | None = None
    if comp is not None:
        receivers["recvmmsg"] = (lambda n: len(comp.recv_batch(sink.fileno(), 64)), fill_plain)
        if caps["gro"] and caps["gso"]:
            gro_sink = _socket(gro=True, twin=comp)
            gro_dst, gro_fd = gro_sink.getsockname(), gro_sink.fileno()
            receivers["recvmmsg + GRO"] = (
                lambda n: len(comp.recv_batch(gro_fd, 64)),
                lambda p: comp.send_batch(fd, p, gro_dst, gso=True),
            )
    for name, (recv, fill) in receivers.items():
        for batch in BATCHES:
            results["receive"][f"{name} @{batch}"] = time_recv(recv, fill, batch, rounds, repeat)

    for s in (src, sink, gro_sink):
        if s is not None:
            s.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro.udpio", description=__doc__)
    ap.add_argument("--rounds", type=int, default=300, help="batches per run (default 300)")
    ap.add_argument("--repeat", type=int, default=5, help="runs; the best is kept (default 5)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = ap.parse_args(argv)

    from ptproxy.tunnel import udpio

    caps = udpio.capabilities()
    load = os.getloadavg()
    print(
        f"udpio: facade {udpio.IMPLEMENTATION}, capabilities {caps}; {SIZE}-byte datagrams;"
        f" load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    results = measure(args.rounds, args.repeat)
    for direction, rows in results.items():
        names = list(dict.fromkeys(k.rsplit(" @", 1)[0] for k in rows))
        print(f"\n{direction} (µs per datagram)")
        print(f"{'':<18}" + "".join(f"{'batch ' + str(b):>10}" for b in BATCHES))
        for name in names:
            cells = "".join(f"{rows[f'{name} @{b}']:>10.2f}" for b in BATCHES)
            print(f"{name:<18}{cells}")
    if args.json:
        doc = {
            "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "load": load,
            "capabilities": caps,
            "datagram_size": SIZE,
            "us_per_datagram": results,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
