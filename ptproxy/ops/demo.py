"""``ptproxy demo``: a whole tunnel on loopback with throwaway certificates, no setup needed.

Starts a small origin, a server end and a client end in one process (each end configured exactly
as a user's TOML would configure it), sends one request through, prints what to ``curl``, and
keeps running until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import tempfile
from pathlib import Path

from ptproxy.ops.app import App
from ptproxy.ops.config import load
from ptproxy.ops.devcerts import DemoPki, make_demo_pki
from ptproxy.wire.events import BodyData, EndOfMessage, RequestHead
from ptproxy.wire.parser import RequestParser

__all__ = ["run_demo", "demo_configs"]

logger = logging.getLogger("ptproxy.demo")


def _free_port(kind: int, wanted: int) -> int:
    """``wanted`` if it can be bound on loopback, else any free port."""
    for port in (wanted, 0):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def _end_toml(pki: DemoPki, mode: str, quic_port: int, http_address: str) -> str:
    """One end's TOML, all on loopback: the client dials the server and listens for HTTP on
    ``http_address``; the server binds the QUIC port and relays to the origin at ``http_address``."""
    if mode == "Client":
        peer, leaf, host_key, http_key = pki.server_name, pki.client, "connect_address", "http_bind_address"
    else:
        peer, leaf, host_key, http_key = pki.client_name, pki.server, "bind_address", "http_connect_address"
    return f"""[general]
mode = "{mode}"
peer_hostname = "{peer}"
{host_key} = "127.0.0.1"
quic_port = {quic_port}
{http_key} = "{http_address}"

[tls]
ca = "{pki.ca.name}"
cert = "{leaf.cert.name}"
key = "{leaf.key.name}"
"""


def demo_configs(directory: Path, http_port: int, quic_port: int, origin_port: int) -> tuple[Path, Path]:
    """Write a CA, two certificates and the two TOML files; return (client.toml, server.toml)."""
    pki = make_demo_pki(directory)
    client = directory / "client.toml"
    server = directory / "server.toml"
    client.write_text(_end_toml(pki, "Client", quic_port, f"127.0.0.1:{http_port}"))
    server.write_text(_end_toml(pki, "Server", quic_port, f"127.0.0.1:{origin_port}"))
    return client, server


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 origin: answers every request with what it received."""
    parser = RequestParser()
    head: RequestHead | None = None
    size = 0
    try:
        while data := await reader.read(65536):
            for event in parser.feed(data):
                if isinstance(event, RequestHead):
                    head, size = event, 0
                elif isinstance(event, BodyData):
                    size += len(event.data)
                elif isinstance(event, EndOfMessage) and head is not None:
                    body = (
                        f"hello from the ptproxy demo origin: {head.method.decode()} "
                        f"{head.target.decode('latin-1')} ({size} body bytes) came through the tunnel\n"
                    ).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body)
                    )
                    await writer.drain()
    except Exception:  # noqa: BLE001 - a demo origin must not crash on a rude client
        pass
    finally:
        writer.close()


def _get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/hello", headers={"Host": "demo.local"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


async def run_demo(http_port: int = 20080, quic_port: int = 20010, *, once: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="ptproxy-demo-") as tmp:
        origin = await asyncio.start_server(_origin, "127.0.0.1", 0)
        origin_port = origin.sockets[0].getsockname()[1]
        http_port = _free_port(socket.SOCK_STREAM, http_port)
        quic_port = _free_port(socket.SOCK_DGRAM, quic_port)
        client_toml, server_toml = demo_configs(Path(tmp), http_port, quic_port, origin_port)
        server = App(load(server_toml))
        client = App(load(client_toml))
        await server.start()
        await client.start()
        client.install_signal_handlers()
        status, body = await asyncio.get_running_loop().run_in_executor(None, _get, http_port)
        print(f"demo request: GET /hello -> {status}: {body.strip()}", flush=True)
        if not once:
            print(
                f"\nThe tunnel is up. Try:\n  curl -v http://127.0.0.1:{http_port}/anything\n"
                f"Configs in use: {client_toml} and {server_toml}\nCtrl-C to stop.",
                flush=True,
            )
            await client.wait_stopped()
        await client.shutdown()
        await server.shutdown()
        origin.close()
        return 0 if status == 200 else 1
