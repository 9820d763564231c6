"""A plain aioquic HTTP/3 client that presents no certificate; prints what happened as JSON.

    python tests/support/quic_client_nocert.py --port N --ca ca.crt --server-name NAME

It uses stock aioquic (none of ptproxy's patches): the server end must refuse it. The output is
one JSON object: whether the handshake completed on our side, whether a request got any answer,
and how the connection ended (``error_code``, ``reason``), e.g. 0x174 = TLS alert 116
certificate_required (RFC 8446 6.2, RFC 9001 4.8: crypto error 0x100 + alert).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent


class Probe(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.handshake_completed = False
        self.terminated: asyncio.Future[ConnectionTerminated] = (
            asyncio.get_running_loop().create_future()
        )
        self.answered = False

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_completed = True
        elif isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, (HeadersReceived, DataReceived)):
                self.answered = True

    def send_request(self) -> None:
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"h"),
                (b":path", b"/bytes/10"),
            ],
            end_stream=True,
        )
        self.transmit()


async def probe(port: int, ca: str, server_name: str, timeout: float) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name)
    config.load_verify_locations(ca)
    async with connect(
        "127.0.0.1", port, configuration=config, create_protocol=Probe, wait_connected=False
    ) as proto:
        assert isinstance(proto, Probe)
        proto.transmit()  # wait_connected=False leaves the first flight unsent
        try:
            await asyncio.wait_for(proto.wait_connected(), timeout)
            proto.send_request()
        except (TimeoutError, ConnectionError):
            pass
        try:
            event = await asyncio.wait_for(asyncio.shield(proto.terminated), timeout)
        except TimeoutError:
            return {
                "handshake_completed": proto.handshake_completed,
                "answered": proto.answered,
                "terminated": False,
            }
        return {
            "handshake_completed": proto.handshake_completed,
            "answered": proto.answered,
            "terminated": True,
            "error_code": event.error_code,
            "reason": event.reason_phrase,
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(probe(args.port, args.ca, args.server_name, args.timeout))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
