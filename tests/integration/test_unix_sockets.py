"""UNIX domain sockets, with real processes: a client end listening on ``unix:PATH`` (curl
``--unix-socket``), a server end whose origin (tools/origin_server.py ``--unix``) is ``unix:PATH``,
health-probed and shown as ``unix:/path`` in /metrics; a stale socket file replaced at start, a
live one or a file that is not a socket refused with one error line.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.h1client import request
from tests.support.pair import REPO_ROOT, Pair, free_port, read_text, stop_process, wait_for

POLL = 30.0  # seconds: states are polled for, never asserted fast


@pytest.fixture()
def unix_origin(tmp_path: Path) -> Iterator[Path]:
    """tools.origin_server on a UNIX socket; yields its path."""
    path = tmp_path / "origin.sock"
    log = tmp_path / "unix-origin.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.origin_server", "--unix", str(path)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on unix:"):
        proc.kill()
        raise RuntimeError(f"origin did not start: {line!r} {read_text(log)}")
    yield path
    stop_process(proc, timeout=5)
    proc.stdout.close()


def stale_socket(path: Path) -> None:
    """A socket file nobody accepts on: what a crashed process leaves behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def curl_unix(path: Path, url: str) -> tuple[int, bytes]:
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--unix-socket", str(path), "-w", "\n%{http_code}", url],
        capture_output=True, timeout=30, check=True,
    ).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def origin_up(metrics_port: int, address: str) -> bool:
    text = request(metrics_port, "GET", "/metrics", timeout=10).body.decode()
    return f'ptproxy_origin_up{{origin="{address}",route="default"}} 1.0' in text


def test_unix_listener_and_unix_origin(make_pair: Callable[..., Pair], tmp_path: Path, unix_origin: Path) -> None:
    listener = tmp_path / "pair1" / "http.sock"  # "unix:http.sock" resolves next to client.toml
    stale_socket(listener)
    metrics = free_port()
    pair = make_pair(
        {
            "general": {"http_bind_address": "unix:http.sock"},
            "system": {"unix_socket_mode": "0660", "add_forwarded": True},
        },
        {
            "general": {"http_connect_address": f"unix:{unix_origin}"},
            "routes": [{"name": "default", "health": {"path": "/status/204", "interval": 200}}],
            "metrics": {"bind_address": f"127.0.0.1:{metrics}"},
        },
    )
    assert "removing the stale socket file" in pair.client_log()
    assert f"listening for HTTP/1.1 at unix:{listener}" in pair.client_log()
    assert stat.S_IMODE(os.stat(listener).st_mode) == 0o660

    status, body = curl_unix(listener, "http://app.example/echo?unix=1")
    assert status == 200, pair.logs()
    echo = json.loads(body)
    assert echo["target"] == "/echo?unix=1"
    assert ["Host", "app.example"] in echo["headers"]  # the Host header is the client's, unchanged
    # A UNIX socket peer has no address: RFC 7239's "unknown" node.
    assert ["Forwarded", 'for="unknown";by="unknown";proto=http'] in echo["headers"], echo["headers"]

    # The probe reaches the UNIX socket origin too; metrics name it unix:/path.
    assert wait_for(lambda: origin_up(metrics, f"unix:{unix_origin}"), POLL), pair.logs()
    assert "DOWN" not in pair.server_log()

    assert pair.client.stop() == 0
    assert not listener.exists(), "the client end left its socket file behind"


def test_a_live_socket_or_another_file_is_refused(make_pair: Callable[..., Pair], tmp_path: Path) -> None:
    live = tmp_path / "live.sock"
    other = tmp_path / "not-a-socket"
    other.write_text("data")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(str(live))
        busy.listen(1)
        pair = make_pair(
            {
                "general": {"http_bind_address": f"unix:{live}"},
                "routes": [{"name": "api", "http_bind_address": f"unix:{other}"}],
            },
            start_server=False,
            wait=False,
        )
        assert pair.client.wait(POLL) == 1, pair.client_log()
    errors = [line for line in pair.client_log().splitlines() if "error" in line.lower()]
    assert errors == [
        f"ptproxy: error: [general] http_bind_address: unix:{live}: another process is listening on "
        "this socket; stop it or choose another path"
    ]
    assert live.exists()

    # The listener is gone now, its file stale: replaced; the route's path is still no socket.
    pair.client.start()
    assert pair.client.wait(POLL) == 1, pair.client_log()
    errors = [line for line in pair.client.current_log().splitlines() if "error" in line.lower()]
    assert errors == [
        f"ptproxy: error: routes[0].http_bind_address: unix:{other}: the path exists and is not a "
        "socket; remove it or choose another path"
    ]
    assert other.read_text() == "data"
