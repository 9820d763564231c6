"""A WebSocket origin for the integration tests, on the ``websockets`` library (a real server
implementation, not ours). Run: ``python -m tests.support.ws_origin --port 0``; prints
``listening on PORT``.

Paths:
- ``/echo``: every message back as received (text stays text, binary stays binary); the text
  ``close <code> <reason>`` closes with that code and reason instead.
- ``/handshake``: one text message, JSON: the request's path and headers as the origin saw them,
  and the subprotocol chosen.
- ``/closes``: one text message, JSON: every (code, reason) a client closed ``/echo`` with.
- ``/refuse``: no upgrade: ``403`` with a text body.
- anything else: ``404``.

Subprotocols ``chat`` and ``superchat`` are offered; permessage-deflate as the library does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from http import HTTPStatus

from websockets.asyncio.server import Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.typing import Subprotocol

MAX_SIZE = 32 * 1024 * 1024
CLOSES: list[tuple[int | None, str | None]] = []


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    path = request.path.split("?", 1)[0]
    if path == "/refuse":
        return connection.respond(HTTPStatus.FORBIDDEN, "websocket refused by the origin\n")
    if path not in ("/echo", "/handshake", "/closes"):
        return connection.respond(HTTPStatus.NOT_FOUND, f"no websocket at {path}\n")
    return None


def select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # The library's default refuses a client that offers none when the server has a list.
    return next((p for p in offered if p in ("chat", "superchat")), None)


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path.split("?", 1)[0] if ws.request is not None else ""
    if path == "/handshake":
        assert ws.request is not None
        await ws.send(
            json.dumps(
                {
                    "path": ws.request.path,
                    "headers": [[k, v] for k, v in ws.request.headers.raw_items()],
                    "subprotocol": ws.subprotocol,
                }
            )
        )
        await ws.wait_closed()
    elif path == "/closes":
        await ws.send(json.dumps(CLOSES))
        await ws.wait_closed()
    else:
        await _echo(ws)


async def _echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close "):
                _, code, reason = message.split(" ", 2)
                await ws.close(int(code), reason)
                return
            await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        # (1006, ""): the connection ended without a close frame (cut, e.g. by a reset).
        CLOSES.append((ws.close_code, ws.close_reason))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        process_request=process_request,
        select_subprotocol=select_subprotocol,
        max_size=MAX_SIZE,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sys.stdout.write(f"listening on {port}\n")
        sys.stdout.flush()
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
