"""DatagramSocket (tunnel/datagrams.py) on a real loopback UDP socket, on uvloop (the product's loop)."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from ptproxy.tunnel.datagrams import DatagramSocket


async def _settle(predicate: object, rounds: int = 200) -> None:
    for _ in range(rounds):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)


def test_reading_goes_on_after_an_icmp_error_on_a_connected_socket() -> None:
    """A port unreachable arrives as POLLERR; libuv stops polling the fd for reading when it
    sees one, so without re-registering the reader the socket would go deaf for good."""

    async def main() -> tuple[list[OSError], list[bytes]]:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now: the first datagram draws an ICMP error
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.connect(("127.0.0.1", port))
        got: list[bytes] = []
        errors: list[OSError] = []
        ds = DatagramSocket(client, lambda data, _addr: got.append(data), errors.append)
        try:
            ds.send([b"ping 1"], None)
            await _settle(lambda: errors)
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            server.bind(("127.0.0.1", port))
            server.settimeout(5)
            with server:
                ds.send([b"ping 2"], None)
                data, addr = server.recvfrom(100)
                server.sendto(b"pong", addr)
                await _settle(lambda: got)
        finally:
            ds.close()
        return errors, got

    errors, got = uvloop.run(main())
    assert [type(e) for e in errors] == [ConnectionRefusedError]
    assert got == [b"pong"]
