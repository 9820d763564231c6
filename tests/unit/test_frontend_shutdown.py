"""The client end's listener at shutdown (a hand-off's race, with real sockets in-process): a
connection accepted in the very loop turn the shutdown begins, before the task serving it first
runs, still gets its request answered; it is never closed unread (the client would see a reset).

No tunnel is up here (the dialer is never started), so the defined answer is the 503 of a request
that waited ``stream_queue_timeout`` for a session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

from ptproxy.client.dialer import Dialer
from ptproxy.client.listener import Frontend
from ptproxy.ops.config import Config, parse
from tests.support.pair import free_port

CONFIG = """
[general]
mode = "Client"
peer_hostname = "server.example.com"
connect_address = {connect}
http_bind_address = "127.0.0.1:{port}"
[tls]
ca = "ca.crt"
cert = "client.crt"
key = "client.key"
[limits]
stream_queue_timeout = 200
"""


class ShutdownAtAccept(Frontend):
    """Starts its own shutdown in the loop turn it accepts its first connection, scheduled ahead
    of the task that serves that connection."""

    closing: asyncio.Task[None] | None = None

    def _new_connection(self):  # type: ignore[no-untyped-def]
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self.close())
        return super()._new_connection()


def _config() -> Config:
    return parse(CONFIG.format(connect=json.dumps("127.0.0.1:9"), port=free_port()), path=Path("/etc/ptproxy/client.toml"))


async def _request_during_shutdown() -> bytes:
    config = _config()
    dialer = Dialer(SimpleNamespace(config=config))  # type: ignore[arg-type]  # never dials here
    frontend = ShutdownAtAccept(config, dialer)
    await frontend.start()
    port = frontend.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        answer = b"<reset>"
    finally:
        writer.close()
    assert frontend.closing is not None
    await asyncio.wait_for(frontend.closing, 30)
    return answer


def test_a_connection_accepted_as_the_shutdown_begins_gets_its_request_answered() -> None:
    answer = asyncio.run(_request_during_shutdown())
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
    assert b"connection: close" in answer.lower(), answer[:300]
