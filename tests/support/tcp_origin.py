"""A TCP origin for the TCP stream route tests, run as its own process:
``python -m tests.support.tcp_origin --port 0 --log PATH`` prints ``listening on PORT``.

The first line a connection sends picks what the origin does:

- ``echo``: every later byte is sent back; at the client's EOF the origin writes
  ``eof after N bytes`` (so a test sees the EOF arrived and that the origin can still send), then
  closes.
- ``close-first``: the origin writes ``bye``, shuts down its write side (FIN) at once, then reads
  until the client's EOF.
- ``reset``: the origin writes ``doomed``, then resets the connection (RST).

Each connection appends one JSON line to ``--log`` when it ends: the mode, the bytes received
after the first line and their SHA-256, so a test can check what reached the origin.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import struct
import sys
from pathlib import Path


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: Path) -> None:
    mode = (await reader.readline()).strip().decode("ascii", "replace")
    digest = hashlib.sha256()
    received = 0
    error = ""
    try:
        if mode == "reset":
            writer.write(b"doomed\n")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if mode == "close-first":
            writer.write(b"bye\n")
            await writer.drain()
            writer.write_eof()
        while chunk := await reader.read(256 * 1024):
            received += len(chunk)
            digest.update(chunk)
            if mode == "echo":
                writer.write(chunk)
                await writer.drain()
        if mode == "echo":
            writer.write(f"eof after {received} bytes\n".encode())
            await writer.drain()
    except (ConnectionError, OSError) as exc:
        error = type(exc).__name__
    finally:
        entry = {"mode": mode, "received": received, "sha256": digest.hexdigest(), "error": error}
        with log.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        writer.close()


async def _main(port: int, log: Path) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, log), "127.0.0.1", port)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.port, args.log))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
