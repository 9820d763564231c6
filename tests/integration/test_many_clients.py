"""Many clients at once (issue 12 item 7): what a wrk -c1024 run needs besides a fair stream queue.

- The client end's listener takes a burst of connections as large as the kernel allows
  (``net.core.somaxconn``), not asyncio's default backlog of 100: beyond the accept queue the
  kernel drops SYNs, and those clients wait 1, 3, 7 s for retransmissions (the whole tail of a
  c1024 run). Checked while the client end is stopped (SIGSTOP), so only the kernel's queue counts.
- A tunnel running all its streams reuses origin connections: the idle pool keeps as many as the
  server end serves requests at once (``max_origin_idle_connections`` ≥
  ``max_concurrent_http_streams`` by default), so requests in flight do not close and reopen them.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.counting_origin import CountingOrigin, running_counting_origin
from tests.support.h1client import request
from tests.support.pair import Pair

BURST = 250  # connections at once: well beyond asyncio's default backlog (100)


def _somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(_somaxconn() <= BURST, reason="net.core.somaxconn caps the backlog below the burst")
def test_a_burst_of_connections_waits_in_the_accept_queue_not_in_syn_retries(
    make_pair: Callable[..., Pair],
) -> None:
    pair = make_pair()
    socks: list[socket.socket] = []
    pair.client.send(signal.SIGSTOP)  # nothing is accepted: only the kernel's accept queue counts
    try:
        for _ in range(BURST):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", pair.http_port))
            socks.append(s)
        # A handshake on loopback completes at once when the queue has room; a SYN dropped for a
        # full queue is retried after 1 s, and dropped again while the end stays stopped.
        pending = set(socks)
        deadline = time.monotonic() + 5.0
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.2)
            pending.difference_update(writable)
        connected = BURST - len(pending)
    finally:
        pair.client.send(signal.SIGCONT)
    try:
        assert connected == BURST, f"only {connected} of {BURST} connections completed their handshake"
        # And all of them are served once the end runs again.
        for s in socks:
            s.setblocking(True)
            s.settimeout(60)
            s.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in socks:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    finally:
        for s in socks:
            s.close()


# -- origin connection reuse ----------------------------------------------------------------------

STREAMS = 40  # above the old default of 32 idle origin connections
HOLD = 0.5  # s the origin holds each request, so a round's requests are all in flight at once


@pytest.fixture()
def counting_origin() -> Iterator[CountingOrigin]:
    with running_counting_origin(HOLD) as origin:
        yield origin


def test_a_full_tunnel_reuses_its_origin_connections(
    make_pair: Callable[..., Pair], counting_origin: CountingOrigin
) -> None:
    both = {"transport": {"max_concurrent_http_streams": STREAMS}}
    pair = make_pair(both, both, origin_port=counting_origin.server_address[1])

    def one(i: int) -> int:
        return request(pair.http_port, "GET", f"/r{i}", timeout=60).status

    with ThreadPoolExecutor(STREAMS) as pool:
        for _ in range(2):  # the second round finds the first one's connections idle
            assert list(pool.map(one, range(STREAMS))) == [200] * STREAMS
    # At most STREAMS requests are at the origin at once: a pool that kept every connection
    # released never needs more. (With 32 kept, the second round reopened the other 8.)
    assert counting_origin.accepted <= STREAMS, f"{counting_origin.accepted} origin connections"


def test_small_responses_at_once_give_back_their_flow_control_credit(make_pair: Callable[..., Pair]) -> None:
    """A small response that arrives whole is written in one go (client/listener.py's whole-body
    path); its bytes must still be credited to the connection's receive window, or every such
    response shrinks the window for good and a busy session stalls on it: ab -k at c32 hung
    after ~21k requests with the default window. A fixed 8 KiB window (a hard limit) makes a
    leak of even a few bytes per response show within the run: ab then times out."""
    p = make_pair({"transport": {"receive_window": 8192}})
    n = 10000
    out = subprocess.run(
        ["ab", "-k", "-q", "-s", "20", "-c", "32", "-n", str(n), p.url("/bytes/10")],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-500:])
    assert re.search(rf"Complete requests:\s+{n}\b", out.stdout), out.stdout
    assert re.search(r"Failed requests:\s+0\b", out.stdout), out.stdout
    assert re.search(rf"Keep-Alive requests:\s+{n}\b", out.stdout), out.stdout
