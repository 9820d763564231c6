"""Joined writes at the HTTP/1.1 edges, seen from outside the processes.

The client end writes a small response's head and the body that arrived with it in one write
syscall (it used to be one per piece). Observed with strace attached to the real client end
process: the bytes the raw-socket client receives must all come from one ``write`` on its
connection. Byte counts, not timing. Skipped where strace cannot attach (no ptrace permission).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.pair import Pair, read_text, wait_for

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

# One traced syscall on a TCP socket, as `strace -f -yy -s 0` prints it, e.g.
# 1234  writev(12<TCP:[127.0.0.1:8080->127.0.0.1:40000]>, [...], 2) = 130
_CALL = re.compile(r"(write|writev|sendmsg|sendto)\(\d+<TCP:\[([^\]]*)\]>.*\)\s+=\s+(\d+)")


@contextmanager
def traced_writes(pid: int, out: Path) -> Iterator[list[tuple[str, str, int]]]:
    """The write syscalls ``pid`` makes on TCP sockets inside the block: (call, socket, bytes)."""
    err = out.with_suffix(".err")
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(
            ["strace", "-f", "-yy", "-s", "0", "-e", "trace=write,writev,sendmsg,sendto", "-o", str(out), "-p", str(pid)],
            stderr=err_file,
        )
    calls: list[tuple[str, str, int]] = []
    try:
        if not wait_for(lambda: "attached" in read_text(err) or proc.poll() is not None, 10.0) or proc.poll() is not None:
            pytest.skip(f"strace cannot attach: {read_text(err)[-300:]}")
        yield calls
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    calls.extend((m[1], m[2], int(m[3])) for m in _CALL.finditer(read_text(out)))


def get_once(port: int, target: str) -> tuple[bytes, int]:
    """One GET on a fresh connection; the whole response and this socket's local port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET %b HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n" % target.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data, s.getsockname()[1]


def test_small_response_head_and_body_leave_the_client_end_in_one_write(pair: Pair, tmp_path: Path) -> None:
    with traced_writes(pair.proc_client.pid, tmp_path / "client.strace") as calls:
        response, port = get_once(pair.http_port, "/status/200")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head)[1])  # type: ignore[index]
    assert len(body) == length > 0
    # The writes on this client's connection (its port is the far end of the client end's socket).
    ours = [(call, size) for call, sock, size in calls if sock.endswith(f":{port}")]
    assert ours == [(ours[0][0], len(response))], (ours, len(response))
