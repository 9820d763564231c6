"""SIGUSR2 hand-off with real processes: restarts that refuse nothing (issue 15, item 5).

A load of mixed requests runs through the pair while each end is handed over to a new process:
every request opens a new TCP connection to the client end (so a refused connection would show at
once), GET bodies of several sizes (Content-Length and chunked) and POST uploads (Content-Length
and chunked) are hash-checked, and TCP streams through a TCP stream route are echoed and
hash-checked. Failures are reported by kind. The process ids come from the log line the old
process writes ("handed over to process N"); each old process must exit once drained.

The new processes are not children of this test (the old process started them), so they are
tracked by pid through /proc and stopped here, not by the pair's teardown.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import threading
import time
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pair import End, Pair, free_port, wait_for
from tools.origin_server import pattern_sha256

HANDED = re.compile(r"handed over to process (\d+)")
HANDOFF_TIMEOUT = 60.0  # s: a loaded 2-core CI machine starts a Python process slowly
SIZES = [0, 1, 1000, 16 * 1024, 64 * 1024 + 7, 300_000, 2_000_000]
TCP_SIZES = [1, 5000, 200_000, 1_500_000]


# -- processes by pid ------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running (a zombie left for a reaper that never comes counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def reap(end: End) -> None:
    if end.proc is not None:
        end.proc.poll()  # the first process is our child: collect it, or it stays a zombie


def hand_off(end: End, pid: int) -> int:
    """SIGUSR2 to ``pid``; the new process's pid once the old one has exited."""
    before = end.log().count("handed over to process")
    os.kill(pid, signal.SIGUSR2)
    if not wait_for(lambda: end.log().count("handed over to process") > before, HANDOFF_TIMEOUT):
        pytest.fail(f"{end.name} end {pid} did not hand over:\n{end.log()[-3000:]}")
    new = int(HANDED.findall(end.log())[-1])
    assert new != pid
    def gone() -> bool:
        # Checked before reaping: a child that turns zombie between a reap and the check would
        # count as gone with its exit status never collected (returncode None).
        if alive(pid):
            return False
        reap(end)
        return True

    if not wait_for(gone, HANDOFF_TIMEOUT):
        pytest.fail(f"{end.name} end {pid} did not exit after handing over:\n{end.log()[-3000:]}")
    assert alive(new), end.log()[-3000:]
    return new


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    if alive(pid):
        os.kill(pid, signal.SIGINT)
        if not wait_for(lambda: not alive(pid), timeout):
            os.kill(pid, signal.SIGKILL)


class Pids:
    """The current process of each end; whatever still runs is stopped at the end."""

    def __init__(self, pair: Pair) -> None:
        assert pair.client.proc is not None and pair.server.proc is not None
        self.pair = pair
        self.client = pair.client.proc.pid
        self.server = pair.server.proc.pid

    def hand_off(self, which: str) -> int:
        end = self.pair.client if which == "client" else self.pair.server
        new = hand_off(end, getattr(self, which))
        setattr(self, which, new)
        return new

    def stop(self) -> None:
        stop_pid(self.client)
        stop_pid(self.server)
        reap(self.pair.client)
        reap(self.pair.server)


# -- the load --------------------------------------------------------------------------------------


class EchoOrigin:
    """A TCP echo server (the TCP route's origin): echoes until the peer's FIN, then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class Load:
    """Workers sending mixed, hash-checked requests (and TCP streams) until stopped."""

    def __init__(self, http_port: int, tcp_port: int | None, workers: int = 6, seed: int = 15) -> None:
        self.http_port = http_port
        self.tcp_port = tcp_port
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.examples: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        rng = random.Random(seed)
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(rng.random()),), daemon=True) for _ in range(workers)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _run(self, rng: random.Random) -> None:
        kinds = ["get-length", "get-chunked", "post-length", "post-chunked"]
        if self.tcp_port is not None:
            kinds.append("tcp-stream")
        while not self._stop.is_set():
            kind = rng.choice(kinds)
            try:
                if kind == "tcp-stream":
                    self._tcp(rng)
                else:
                    self._http(kind, rng)
            except _Failed as f:
                self._record(f"{kind}: {f.kind}", f.detail)
            except ConnectionRefusedError as exc:
                self._record(f"{kind}: refused", str(exc))
            except (OSError, http.client.HTTPException) as exc:
                self._record(f"{kind}: {type(exc).__name__}", str(exc))
            else:
                with self._lock:
                    self.done[kind] += 1

    def _record(self, kind: str, detail: str) -> None:
        with self._lock:
            self.failed[kind] += 1
            if len(self.examples) < 20:
                self.examples.append(f"{time.strftime('%H:%M:%S')} {kind}: {detail}")

    def _http(self, kind: str, rng: random.Random) -> None:
        n = rng.choice(SIZES)
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        try:
            conn.connect()  # a refusal here is what the hand-off must never cause
            if kind.startswith("get"):
                conn.request("GET", f"/bytes/{n}" + ("?chunked=1" if kind == "get-chunked" else ""))
                resp = conn.getresponse()
                body = resp.read()
                _check(resp.status == 200, "status", f"GET {n}: {resp.status} {body[:200]!r}")
                _check(len(body) == n and hashlib.sha256(body).hexdigest() == pattern_sha256(n),
                       "corrupted", f"GET {n}: got {len(body)} bytes")
                return
            data = rng.randbytes(n)
            if kind == "post-chunked":
                pieces = [data[i : i + 70_000] for i in range(0, n, 70_000)]
                conn.request("POST", "/sink", body=iter(pieces), encode_chunked=True,
                             headers={"Transfer-Encoding": "chunked"})
            else:
                conn.request("POST", "/sink", body=data)
            resp = conn.getresponse()
            answer = resp.read()
            _check(resp.status == 200, "status", f"POST {n}: {resp.status} {answer[:200]!r}")
            got = json.loads(answer)
            _check(got.get("body_length") == n and got.get("body_sha256") == hashlib.sha256(data).hexdigest(),
                   "corrupted", f"POST {n}: origin saw {got}")
        finally:
            conn.close()

    def _tcp(self, rng: random.Random) -> None:
        assert self.tcp_port is not None
        n = rng.choice(TCP_SIZES)
        data = rng.randbytes(n)
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=60) as sock:
            sender = threading.Thread(target=_send_all, args=(sock, data), daemon=True)
            sender.start()
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
            sender.join(60)
        _check(bytes(received) == data, "corrupted" if len(received) == n else "truncated",
               f"TCP {n}: echoed {len(received)} bytes")

    def report(self) -> str:
        return f"done {dict(self.done)}; failed by kind {dict(self.failed)}; examples:\n" + "\n".join(self.examples)


class _Failed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _check(ok: bool, kind: str, detail: str) -> None:
    if not ok:
        raise _Failed(kind, detail)


def _send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the echo ends with our FIN
    except OSError:
        pass


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture()
def echo() -> Iterator[EchoOrigin]:
    origin = EchoOrigin()
    yield origin
    origin.close()


@pytest.fixture()
def handoff_pair(make_pair: Callable[..., Pair], echo: EchoOrigin) -> Iterator[tuple[Pair, Pids, int]]:
    tcp_port = free_port()
    # [metrics] on both ends: its listener is not handed over, its port must be free for the new one.
    pair = make_pair(
        {
            "routes": [{"name": "echo", "tcp_bind_address": f"127.0.0.1:{tcp_port}"}],
            "metrics": {"bind_address": f"127.0.0.1:{free_port()}"},
        },
        {
            "routes": [{"name": "echo", "origins": [f"127.0.0.1:{echo.port}"]}],
            "metrics": {"bind_address": f"127.0.0.1:{free_port()}"},
        },
    )
    pids = Pids(pair)
    try:
        yield pair, pids, tcp_port
    finally:
        pids.stop()


def _assert_clean(load: Load, pair: Pair) -> None:
    """No failure of any kind: no refused connection, no reset request, no wrong body. (A
    connection the old client end accepted just before it stopped gets its request answered: see
    Frontend.close.)"""
    print(load.report())  # shown with -s, or on failure
    assert sum(load.failed.values()) == 0, f"{load.report()}\n{pair.logs()}"
    for kind in ("get-length", "get-chunked", "post-length", "post-chunked", "tcp-stream"):
        assert load.done[kind] > 0, load.report()


# -- tests -----------------------------------------------------------------------------------------


def test_one_handoff_of_each_end_under_load_refuses_nothing(handoff_pair: tuple[Pair, Pids, int]) -> None:
    pair, pids, tcp_port = handoff_pair
    first = (pids.client, pids.server)
    with Load(pair.http_port, tcp_port) as load:
        time.sleep(2)
        pids.hand_off("client")
        time.sleep(2)
        pids.hand_off("server")
        time.sleep(3)
    assert pids.client != first[0] and pids.server != first[1]
    assert pair.client.proc is not None and pair.client.proc.returncode == 0
    assert pair.server.proc is not None and pair.server.proc.returncode == 0
    _assert_clean(load, pair)
    # The client end moved its session to the new server process on GOAWAY, before the old closed.
    assert "sent GOAWAY; opening a new session" in pair.client_log(), pair.logs()
    assert "took over the QUIC socket" in pair.server_log(), pair.logs()
    for toml in (pair.client_toml, pair.server_toml):
        bind = tomllib.loads(toml.read_text())["metrics"]["bind_address"]
        with urllib.request.urlopen(f"http://{bind}/readyz", timeout=10) as resp:
            assert resp.status == 200  # the new process serves the probes


@pytest.mark.slow
def test_three_handoffs_of_each_end_during_a_minute_of_load(handoff_pair: tuple[Pair, Pids, int]) -> None:
    pair, pids, tcp_port = handoff_pair
    seen = {pids.client, pids.server}
    started = time.monotonic()
    with Load(pair.http_port, tcp_port, workers=8) as load:
        for which in ["client", "server"] * 3:
            time.sleep(4)
            new = pids.hand_off(which)
            assert new not in seen
            seen.add(new)
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    assert len(seen) == 8
    _assert_clean(load, pair)


def test_a_failed_handoff_keeps_the_old_process_serving(handoff_pair: tuple[Pair, Pids, int]) -> None:
    pair, pids, _ = handoff_pair
    good = pair.client_toml.read_text()
    pair.client_toml.write_text(good + "\n[general\n")  # no longer parses: the new process exits 1
    os.kill(pids.client, signal.SIGUSR2)
    assert pair.wait_client_log("hand-off to process", timeout=HANDOFF_TIMEOUT), pair.logs()
    line = next(ln for ln in pair.client_log().splitlines() if "hand-off to process" in ln)
    assert "failed, still serving" in line and "exit status 1" in line, line
    assert alive(pids.client)
    with Load(pair.http_port, None, workers=2) as load:
        time.sleep(1)
    assert not load.failed and sum(load.done.values()) > 0, load.report()
    # Fixed, it works; a second SIGUSR2 during that hand-off is ignored with one line.
    pair.client_toml.write_text(good)
    os.kill(pids.client, signal.SIGUSR2)
    # Once the first is being handled (two pending SIGUSR2 would merge into one).
    assert pair.wait_client_log("SIGUSR2: started process", count=2, timeout=HANDOFF_TIMEOUT), pair.logs()
    os.kill(pids.client, signal.SIGUSR2)
    assert pair.wait_client_log("SIGUSR2 ignored: a hand-off to process", timeout=HANDOFF_TIMEOUT), pair.logs()
    assert wait_for(lambda: "handed over to process" in pair.client_log(), HANDOFF_TIMEOUT), pair.logs()
    pids.client = int(HANDED.findall(pair.client_log())[-1])


def test_the_old_process_sends_mainpid_to_systemd(handoff_pair: tuple[Pair, Pids, int], tmp_path: Path) -> None:
    pair, pids, _ = handoff_pair
    notify_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ptp-ho-{os.getpid()}"  # sun_path: 108 bytes
    notify_dir.mkdir(exist_ok=True)
    path = notify_dir / "notify"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(path))
    try:
        # The client end again, now with NOTIFY_SOCKET, as a Type=notify unit starts it.
        pids.stop()
        pair.client.start = _start_with_notify(pair.client, str(path))  # type: ignore[method-assign]
        pair.start_server()
        pair.start_client()
        pids.client, pids.server = pair.proc_client.pid, pair.proc_server.pid
        messages = _collect(manager)
        assert _wait_message(manager, messages, "READY"), messages
        new = pids.hand_off("client")
        found = _wait_message(manager, messages, "MAINPID")
        assert found is not None and found["MAINPID"] == str(new), messages
        assert found.get("STATUS") == f"handed over to process {new}"
        # The old process sent no STOPPING=1 after it: that would stop the unit the new one runs.
        after = messages[messages.index(found) + 1 :]
        _collect(manager, messages, 1.0)
        after = messages[messages.index(found) + 1 :]
        assert not any("STOPPING" in m for m in after), messages
    finally:
        manager.close()
        path.unlink(missing_ok=True)
        notify_dir.rmdir()


def _start_with_notify(end: End, notify: str) -> Callable[[], Any]:
    import subprocess

    from tests.support.pair import ptproxy_cmd, subprocess_env

    def start() -> subprocess.Popen[bytes]:
        log = end.config.parent / f"{end.name}.{len(end.logs) + 1}.log"
        end.logs.append(log)
        with open(log, "wb") as f:
            end.proc = subprocess.Popen(
                ptproxy_cmd(end.config), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                cwd=end.rundir, env={**subprocess_env(), "NOTIFY_SOCKET": notify},
            )
        return end.proc

    return start


def _collect(manager: socket.socket, into: list[dict[str, str]] | None = None, seconds: float = 0.0) -> list[dict[str, str]]:
    messages = [] if into is None else into
    deadline = time.monotonic() + seconds
    while True:
        manager.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = manager.recv(4096)
        except TimeoutError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if line))


def _wait_message(manager: socket.socket, messages: list[dict[str, str]], key: str) -> dict[str, str] | None:
    deadline = time.monotonic() + HANDOFF_TIMEOUT
    while time.monotonic() < deadline:
        for message in messages:
            if key in message:
                return message
        _collect(manager, messages, 0.2)
    return None


def _get_unix(path: Path, n: int) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_a_unix_socket_listener_is_handed_over_and_its_file_kept(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair({"general": {"http_bind_address": "unix:http.sock"}})
    listener = pair.client_toml.parent / "http.sock"
    pids = Pids(pair)
    try:
        assert hashlib.sha256(_get_unix(listener, 5000)).hexdigest() == pattern_sha256(5000)
        inode = listener.stat().st_ino
        pids.hand_off("client")
        # The old process did not remove the file the new one serves on: same socket, same file.
        assert listener.stat().st_ino == inode
        assert hashlib.sha256(_get_unix(listener, 70000)).hexdigest() == pattern_sha256(70000)
        stop_pid(pids.client)
        # The new process removes it at its clean exit: it owns the file now.
        assert wait_for(lambda: not listener.exists(), 10), pair.logs()
    finally:
        pids.stop()
