"""The server end reads (and answers handshakes) before its origin side exists (ops/app.py): a
request that comes before it is kept and served once it does, with the same answer as ever.

Made deterministic from outside the process: the server end runs with App._start_backend held
until a request has been queued (a ``python -c`` prelude), so the request is sure to come first."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

from tests.support.h1client import request
from tests.support.pair import Pair, free_port, read_text, subprocess_env, wait_for

# Run as ``python -c``: the server end's origin side waits for the first early request, then
# starts as usual; then the command line runs as ``python -m ptproxy -c CONFIG`` would.
HOLD_BACKEND = textwrap.dedent(
    """
    import asyncio, sys
    from ptproxy.ops import app

    started = app.App._start_backend

    async def held(self):
        while not self._early_requests:
            await asyncio.sleep(0.01)
        print("origin side made after", len(self._early_requests), "early request(s)",
              "backend", self.backend is not None, "origin imported", "ptproxy.server.origin" in sys.modules,
              flush=True)
        await started(self)

    app.App._start_backend = held
    from ptproxy.ops.cli import main
    raise SystemExit(main(["-c", sys.argv[1]]))
    """
)


def _start_held_server(pair: Pair) -> None:
    end = pair.server
    log = end.config.parent / f"server.{len(end.logs) + 1}.log"
    end.logs.append(log)
    with open(log, "wb") as f:
        end.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_BACKEND, str(end.config)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=end.rundir, env=subprocess_env(),
        )
    pair.wait_server_endpoint()


def test_a_request_before_the_origin_side_exists_is_served(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair(start_server=False, wait=False)
    pair.client.stop()
    _start_held_server(pair)
    pair.start_client()  # the handshake completes: the endpoint answers without an origin side
    assert "ready to serve" not in pair.server.current_log()
    resp = request(pair.http_port, "GET", "/bytes/100")
    assert resp.status == 200
    assert len(resp.body) == 100
    log = pair.server.current_log()
    assert "origin side made after 1 early request(s) backend False origin imported False" in log, log
    assert wait_for(lambda: "ready to serve" in pair.server.current_log(), 10)
    # Served as usual from then on, over the same session.
    assert request(pair.http_port, "GET", "/bytes/10").status == 200
    assert pair.client_log().count("tunnel ready") == 1


def test_an_early_request_to_a_dead_origin_gets_502(make_pair: Callable[..., Pair]) -> None:
    dead = free_port()  # nothing listens there
    pair = make_pair(origin_port=dead, start_server=False, wait=False)
    pair.client.stop()
    _start_held_server(pair)
    pair.start_client()
    resp = request(pair.http_port, "GET", "/bytes/10")
    assert resp.status == 502
    assert f"127.0.0.1:{dead}" in resp.body.decode()
    assert "origin side made after 1 early request(s)" in read_text(pair.server.logs[-1])
