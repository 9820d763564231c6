"""The client end binds its HTTP listener before the heavy part of its start-up (ops/cli.py
``bind_listeners_early``): a connection made while it still imports waits in the listen backlog
and is served once the end is up, instead of being refused.

Made deterministic with SIGSTOP: the client end stops itself when it first imports the app (the
point after which asyncio, aioquic and the TLS set-up are imported); the request is sent while it
is stopped, then it goes on."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.support.pair import Pair, read_text, subprocess_env, wait_for

# Run as ``python -c``: stop this process at the first import of ptproxy.ops.app, then run the
# command line as ``python -m ptproxy -c CONFIG`` would.
STOP_AT_APP = textwrap.dedent(
    """
    import importlib.abc, os, signal, sys

    class StopAtApp(importlib.abc.MetaPathFinder):
        stopped = False

        def find_spec(self, name, path=None, target=None):
            if name == "ptproxy.ops.app" and not self.stopped:
                self.stopped = True
                print("stopping before", name, flush=True)
                os.kill(os.getpid(), signal.SIGSTOP)
            return None

    sys.meta_path.insert(0, StopAtApp())
    from ptproxy.ops.cli import main
    raise SystemExit(main(["-c", sys.argv[1]]))
    """
)


def _stopped(pid: int) -> bool:
    stat = read_text(Path(f"/proc/{pid}/stat"))
    return stat.rsplit(")", 1)[-1].split()[:1] == ["T"]


def test_a_connection_made_while_the_client_end_starts_is_served(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair()
    pair.client.stop()
    end = pair.client
    log = end.config.parent / f"client.{len(end.logs) + 1}.log"
    end.logs.append(log)
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", STOP_AT_APP, str(end.config)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=end.rundir, env=subprocess_env(),
        )
    end.proc = proc
    assert wait_for(lambda: _stopped(proc.pid) or proc.poll() is not None, 30, 0.01), read_text(log)
    assert proc.poll() is None, read_text(log)
    assert "stopping before ptproxy.ops.app" in read_text(log)
    # Stopped before the app (and so the listener, the dialer, aioquic) exists: the port accepts.
    with socket.create_connection(("127.0.0.1", pair.http_port), timeout=10) as conn:
        conn.sendall(b"GET /bytes/100 HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        proc.send_signal(signal.SIGCONT)
        conn.settimeout(30)
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert len(response.split(b"\r\n\r\n", 1)[1]) == 100, response
    pair.wait_ready(count=2)
    assert "using the socket passed" not in read_text(log)  # bound by itself, not passed
