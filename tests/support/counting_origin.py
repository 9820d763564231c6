"""A keep-alive HTTP/1.1 origin for bodiless requests that counts what reached it: the connections
it accepted and the requests it answered. It can hold each request for ``hold`` seconds before
answering, so a test can keep many requests in flight at once."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CountingOrigin(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hold: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hold = hold
        self.accepted = 0
        self.requests = 0
        self.lock = threading.Lock()


class _Handler(socketserver.StreamRequestHandler):
    server: CountingOrigin

    def handle(self) -> None:
        with self.server.lock:
            self.server.accepted += 1
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline()
                if not line:
                    return
                head += line
            with self.server.lock:
                self.server.requests += 1
            if self.server.hold:
                time.sleep(self.server.hold)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")


@contextmanager
def running_counting_origin(hold: float = 0.0) -> Iterator[CountingOrigin]:
    """A :class:`CountingOrigin` serving on a thread for the block's duration."""
    origin = CountingOrigin(hold)
    thread = threading.Thread(target=origin.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        origin.shutdown()
        origin.server_close()
