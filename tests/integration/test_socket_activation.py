"""systemd socket activation, with real processes and the environment systemd sets (through
tests/support/activate.py: fds from 3, ``LISTEN_FDS``, ``LISTEN_FDNAMES``, ``LISTEN_PID`` of the
exec'd process): ``http`` for the general listener, a route's name for its listener, ``quic`` for
the server end's UDP socket. The config's own addresses of those listeners are never bound.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptproxy.ops.devcerts import DemoPki
from tests.support import activate
from tests.support.h1client import read_response, request
from tests.support.pair import (
    READY_TIMEOUT,
    End,
    OriginProcess,
    build_pair,
    defects,
    free_port,
    ptproxy_cmd,
    subprocess_env,
    wait_for,
)

POLL = 30.0  # seconds: states are polled for, never asserted fast


def start_activated(end: End, passed: dict[str, socket.socket]) -> None:
    """Start ``end`` with ``passed`` as its systemd sockets (its log, as End.start keeps it)."""
    log = end.config.parent / f"{end.name}.{len(end.logs) + 1}.log"
    end.logs.append(log)
    with open(log, "wb") as f:
        end.proc = activate.popen(
            ptproxy_cmd(end.config), passed, stdin=subprocess.DEVNULL, stdout=f,
            stderr=subprocess.STDOUT, cwd=end.rundir, env=subprocess_env(),
        )


@pytest.fixture()
def held() -> Iterator[list[socket.socket]]:
    """The test's own copies of the passed sockets, closed at the end."""
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


def listening(kind: int = socket.SOCK_STREAM, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(16)
    return sock


def test_activated_listeners_and_quic_socket_carry_requests(
    tmp_path: Path, pki: DemoPki, origin: OriginProcess, held: list[socket.socket]
) -> None:
    unbound = free_port()  # the config's address of the general listener: must stay unbound
    pair = build_pair(
        tmp_path / "pair",
        pki,
        origin.port,
        {
            "general": {"http_bind_address": f"127.0.0.1:{unbound}"},
            "routes": [{"name": "api", "http_bind_address": "unix:api.sock"}],
        },
        {"routes": [{"name": "api", "origins": [f"127.0.0.1:{origin.port}"]}]},
    )
    http = listening()
    api = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    api_path = tmp_path / "passed-api.sock"
    api.bind(str(api_path))
    api.listen(16)
    quic = listening(socket.SOCK_DGRAM, pair.quic_port)
    stray = listening()
    held.extend([http, api, quic, stray])

    # Connect before the client end exists: the connection waits in the passed socket's backlog.
    queued = socket.create_connection(http.getsockname(), timeout=POLL)
    held.append(queued)

    try:
        start_activated(pair.server, {"quic": quic})
        pair.wait_server_endpoint()
        start_activated(pair.client, {"http": http, "api": api, "stray": stray})
        pair.wait_ready(timeout=READY_TIMEOUT)

        # Sent once the tunnel is up (a request before that is answered 503, as on any listener).
        queued.sendall(b"GET /echo?queued=1 HTTP/1.1\r\nHost: queued.example\r\nConnection: close\r\n\r\n")
        resp = read_response(queued.makefile("rb"))
        assert resp.status == 200, pair.logs()
        assert json.loads(resp.body)["target"] == "/echo?queued=1"

        http_port = http.getsockname()[1]
        assert request(http_port, "GET", "/echo?general=1").status == 200
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--unix-socket", str(api_path), "http://x/echo?api=1"],
            capture_output=True, timeout=30, check=True,
        ).stdout
        assert json.loads(out)["target"] == "/echo?api=1"
        assert [e["target"] for e in origin.entries("api=1")] == ["/echo?api=1"]

        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", unbound), timeout=5).close()
        assert not (pair.dir / "api.sock").exists()  # the route's configured path: never bound

        client_log, server_log = pair.client_log(), pair.server_log()
        assert "[general] http_bind_address: using the socket passed as 'http'" in client_log
        assert "routes[0].http_bind_address: using the socket passed as 'api'" in client_log
        assert f"listening for HTTP/1.1 at unix:{api_path}" in client_log
        assert client_log.count("socket 'stray' was passed to ptproxy") == 1
        assert f"started endpoint at 127.0.0.1:{pair.quic_port}" in server_log
        assert stray_closed_in(pair.client.proc, stray)
        assert pair.stop() == (0, 0)
        # systemd created the socket file and removes it: ptproxy must not.
        assert api_path.exists()
    finally:
        problems = pair.teardown()
    assert problems == [], problems


def stray_closed_in(proc: subprocess.Popen[bytes] | None, stray: socket.socket) -> bool:
    """The unclaimed socket is not among the process's fds any more (closed, not leaked)."""
    assert proc is not None
    inode = f"socket:[{_inode(stray)}]"
    fds = Path(f"/proc/{proc.pid}/fd")
    return all(_readlink(fd) != inode for fd in fds.iterdir())


def _inode(sock: socket.socket) -> int:
    return Path(f"/proc/self/fd/{sock.fileno()}").stat().st_ino


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""


def test_a_passed_socket_of_the_wrong_kind_is_one_error_line(
    tmp_path: Path, pki: DemoPki, origin: OriginProcess, held: list[socket.socket]
) -> None:
    pair = build_pair(tmp_path / "pair", pki, origin.port)
    udp = listening(socket.SOCK_DGRAM)
    held.append(udp)
    start_activated(pair.client, {"http": udp})
    status = wait_for(lambda: pair.client.proc is not None and pair.client.proc.poll() is not None, POLL)
    assert status and pair.client.proc is not None and pair.client.proc.returncode == 1, pair.client_log()
    lines = [line for line in pair.client_log().splitlines() if "error" in line.lower()]
    assert lines == [
        f"ptproxy: error: socket 'http' was passed as a UDP socket at 127.0.0.1:{udp.getsockname()[1]}; "
        "it must be a TCP or UNIX stream socket (ListenStream=)"
    ]
    assert defects(pair.client_log()) == []
