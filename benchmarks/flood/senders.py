"""What an internet-facing QUIC port receives from strangers, made on demand.

- :class:`JunkFlood`: random 1200-byte datagrams shaped like client Initials (long header, version
  1, random connection IDs, random payload), paced at a given rate from one or more source
  addresses (any 127.x.y.z works on Linux loopback), in a thread;
- :func:`handshake_flood`: real QUIC handshakes by stock aioquic clients that present no client
  certificate, several at once, each from a fresh source port.

Used by ``python -m benchmarks.flood`` and ``tests/integration/test_flood.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence

__all__ = ["JunkFlood", "handshake_flood", "junk_initial", "run_handshake_flood"]

SIZE = 1200
TICK = 0.005  # s between bursts: smooth enough, few wakeups


def junk_initial(size: int = SIZE) -> bytes:
    """One junk 'Initial': a valid-looking long header, random everything else."""
    head = bytes([0xC0]) + (1).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
    head += b"\x00" + (0x4000 | (size - len(head) - 3)).to_bytes(2, "big")
    return head + os.urandom(size - len(head))


class JunkFlood:
    """Send ``rate`` junk Initials per second to ``target`` until :meth:`stop`."""

    def __init__(
        self, target: tuple[str, int], rate: float, sources: Sequence[str] = ("127.0.0.1",)
    ) -> None:
        self.target = target
        self.rate = rate
        self.sources = list(sources)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="junk-flood", daemon=True)

    def __enter__(self) -> JunkFlood:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        socks = []
        for host in self.sources:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.setblocking(False)
            socks.append(s)
        # A pool of payloads with a fresh destination CID stamped in per packet (bytes 6..13).
        pool = [bytearray(junk_initial()) for _ in range(64)]
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate)
                while self.sent < due:
                    packet = pool[self.sent % len(pool)]
                    packet[6:14] = os.urandom(8)
                    try:
                        socks[self.sent % len(socks)].sendto(packet, self.target)
                    except (BlockingIOError, ConnectionRefusedError):
                        pass  # a full socket buffer is loss, as on the internet
                    self.sent += 1
                self._stop.wait(TICK)
        finally:
            for s in socks:
                s.close()


async def _attempt(port: int, source: str, ca: str, server_name: str, timeout: float) -> str:
    # Imported here: the junk flood (and the benchmark's parent process) need no aioquic.
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=server_name, idle_timeout=timeout
    )
    config.load_verify_locations(ca)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))  # a fresh source port per attempt
    loop = asyncio.get_running_loop()
    quic = QuicConnection(configuration=config)
    transport, proto = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(quic), sock=sock
    )
    try:
        proto.connect(("127.0.0.1", port))
        await asyncio.wait_for(proto.wait_connected(), timeout)
        # Our side finished; the server now checks the (empty) certificate and closes.
        await asyncio.wait_for(proto.wait_closed(), timeout)
        return "closed by server"
    except ConnectionError:
        return "refused"
    except TimeoutError:
        return "timeout"
    finally:
        transport.close()


async def handshake_flood(
    port: int,
    *,
    ca: str,
    server_name: str,
    duration: float,
    concurrency: int = 8,
    sources: Sequence[str] = ("127.0.0.1",),
    timeout: float = 2.0,
) -> Counter[str]:
    """``concurrency`` clients without a certificate, again and again for ``duration`` s."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + duration

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            source = sources[(n + i) % len(sources)]
            outcomes[await _attempt(port, source, ca, server_name, timeout)] += 1
            i += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return outcomes


def run_handshake_flood(port: int, **kwargs: object) -> tuple[threading.Thread, Counter[str]]:
    """:func:`handshake_flood` on its own event loop in a thread; join the thread for the result."""
    result: Counter[str] = Counter()

    def run() -> None:
        result.update(asyncio.run(handshake_flood(port, **kwargs)))  # type: ignore[arg-type]

    thread = threading.Thread(target=run, name="handshake-flood", daemon=True)
    thread.start()
    return thread, result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.flood.senders --port P --rate R --duration S``: a junk flood in a
    process of its own (so its CPU use does not disturb the measuring process); prints the count."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--sources", default="127.0.0.1", help="comma-separated source addresses")
    args = parser.parse_args(argv)
    with JunkFlood((args.host, args.port), args.rate, sources=args.sources.split(",")) as flood:
        time.sleep(args.duration)
    print(json.dumps({"sent": flood.sent, "rate": args.rate, "duration": args.duration}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
