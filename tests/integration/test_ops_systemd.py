"""Operations: sd_notify end to end, as systemd would see it from a ``Type=notify`` unit.

Each test binds a real ``AF_UNIX``/``SOCK_DGRAM`` socket (the "manager"), starts real
``python -m ptproxy -c`` processes with ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC``) pointing at it,
and checks the datagrams and their order. That pings stop while the event loop is blocked is
proven by ``tests/unit/test_systemd.py::test_run_watchdog_stops_pinging_while_the_loop_is_blocked``
(the same ``run_watchdog`` coroutine the app runs); here we check the cadence end to end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops.devcerts import DemoPki
from tests.support.pair import OriginProcess, Pair, build_pair, defects, read_text, wait_for

Message = dict[str, str]


class Manager:
    """The systemd side of sd_notify: one datagram = one message of KEY=VALUE lines."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ptp-sd-")  # sun_path is limited to 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, Message]] = []

    def pump(self, timeout: float) -> None:
        """Collect whatever arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait(self, key: str, value: str | None = None, timeout: float = 15.0, after: int = 0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            for _, msg in self.messages[after:]:
                if key in msg and (value is None or msg[key] == value):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} within {timeout}s; got {self.kinds()}")
            self.pump(min(left, 0.1))

    def index(self, key: str, start: int = 0) -> int:
        for i, (_, msg) in enumerate(self.messages[start:], start):
            if key in msg:
                return i
        return -1

    def kinds(self) -> list[str]:
        return [",".join(f"{k}={v}" for k, v in m.items()) for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def manager() -> Iterator[Manager]:
    m = Manager()
    yield m
    m.close()


class Proc:
    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ptproxy", "-c", str(config)],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
            )

    def log(self) -> str:
        return read_text(self.log_path)

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture()
def launch(tmp_path: Path) -> Iterator[Any]:
    procs: list[Proc] = []

    def start(config: Path, name: str, manager: Manager | None = None, **env_extra: str) -> Proc:
        env = dict(os.environ)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        env["PYTHONUNBUFFERED"] = "1"
        if manager is not None:
            env["NOTIFY_SOCKET"] = manager.path
        env.update(env_extra)
        proc = Proc(config, tmp_path / f"{name}.{len(procs)}.log", env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
    found = [(p.log_path.name, defects(p.log())) for p in procs if defects(p.log())]
    assert not found, found


@pytest.fixture()
def pair_files(tmp_path: Path, pki: DemoPki, origin: OriginProcess) -> Pair:
    return build_pair(tmp_path / "pair", pki, origin.port)


def test_client_ready_waits_for_the_first_attempt_then_status_follows_the_tunnel(
    manager: Manager, launch: Any, pair_files: Pair
) -> None:
    client = launch(pair_files.client_toml, "client", manager)
    ready = manager.wait("READY", "1")
    # READY came only after the first attempt ended (the server is down), and says why.
    assert ready["STATUS"].startswith("tunnel down: connecting to 127.0.0.1:"), ready
    assert "failed" in ready["STATUS"]
    assert "failed" in client.log()
    # Nothing before READY claimed the tunnel was up.
    before = manager.messages[: manager.index("READY")]
    assert all(m.get("STATUS", "").startswith("tunnel down") for _, m in before), manager.kinds()

    server = launch(pair_files.server_toml, "server", manager=None)
    up_at = len(manager.messages)
    manager.wait("STATUS", "tunnel up", timeout=20, after=up_at)

    server.stop(signal.SIGKILL)
    lost = manager.wait("STATUS", timeout=20, after=manager.index("STATUS", up_at) + 1)
    assert lost["STATUS"].startswith("tunnel down: "), lost

    stop_at = len(manager.messages)
    assert client.stop(signal.SIGINT) == 0
    manager.pump(0.3)
    stopping = manager.wait("STOPPING", "1", after=stop_at)
    assert stopping.get("STATUS") == "shutting down"
    # STOPPING is the last word.
    assert manager.index("STOPPING", stop_at) == len(manager.messages) - 1


def test_server_ready_reload_and_stopping(manager: Manager, launch: Any, pair_files: Pair) -> None:
    server = launch(pair_files.server_toml, "server", manager)
    ready = manager.wait("READY", "1")
    assert ready.get("STATUS") == "serving"
    assert "started endpoint at" in server.log()  # READY only once the endpoint is bound

    at = len(manager.messages)
    server.proc.send_signal(signal.SIGHUP)
    reloading = manager.wait("RELOADING", "1", after=at)
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert manager.wait("READY", "1", after=manager.index("RELOADING", at) + 1)["STATUS"] == "serving"

    at = len(manager.messages)
    assert server.stop(signal.SIGTERM) == 0
    manager.pump(0.2)
    assert manager.wait("STOPPING", "1", after=at)


def test_watchdog_pings_at_watchdog_usec_over_factor(manager: Manager, launch: Any, pair_files: Pair) -> None:
    # watchdog_factor defaults to 1.5: WATCHDOG_USEC=450 ms -> a ping every 300 ms.
    server = launch(pair_files.server_toml, "server", manager, WATCHDOG_USEC="450000")
    manager.wait("READY", "1")
    manager.pump(3.0)
    pings = [t for t, m in manager.messages if m.get("WATCHDOG") == "1"]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert len(pings) >= 8, manager.kinds()
    median = sorted(gaps)[len(gaps) // 2]
    assert 0.25 <= median <= 0.4, gaps
    assert min(gaps) >= 0.2, gaps  # never faster than asked
    server.stop()


def test_watchdog_pid_of_another_process_disables_pings(manager: Manager, launch: Any, pair_files: Pair) -> None:
    server = launch(pair_files.server_toml, "server", manager, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    manager.wait("READY", "1")
    manager.pump(1.0)
    assert not [m for _, m in manager.messages if "WATCHDOG" in m], manager.kinds()
    server.stop()


def test_without_notify_socket_nothing_is_sent(manager: Manager, launch: Any, pair_files: Pair) -> None:
    server = launch(pair_files.server_toml, "server", manager=None, WATCHDOG_USEC="200000")
    assert wait_for(lambda: "started endpoint at" in server.log(), 15)
    manager.pump(0.5)
    assert manager.messages == []
    assert server.stop() == 0
