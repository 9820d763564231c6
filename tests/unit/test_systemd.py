"""sd_notify over real AF_UNIX datagram sockets, the watchdog cadence, and the unit file.

The receiving side is a real bound socket (a filesystem path and an abstract name), standing in
for systemd's notify socket; nothing about the socket is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptproxy.ops.devcerts import DemoPki
from ptproxy.ops.systemd import Notifier, WatchdogSchedule, run_watchdog

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "ptproxy@.service"


class ManagerSocket:
    """The manager's end: a bound SOCK_DGRAM socket and the NOTIFY_SOCKET value naming it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        self.notifiers: list[Notifier] = []

    def notifier(self, **env: str) -> Notifier:
        """A Notifier aimed at this socket; closed when the test ends."""
        notifier = Notifier.from_env({"NOTIFY_SOCKET": self.env_value, **env})
        self.notifiers.append(notifier)
        return notifier

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def assert_empty(self) -> None:
        self.sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            self.sock.recv(4096)


def _bind(kind: str) -> tuple[socket.socket, str, str | None]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        # A short directory of our own: sun_path is limited to 108 bytes and pytest's tmp_path
        # for a parametrized test can exceed that.
        directory = tempfile.mkdtemp(prefix="ptp-notify-")
        path = os.path.join(directory, "notify")
        sock.bind(path)
        return sock, path, directory
    name = f"ptproxy-test-{uuid.uuid4().hex}"
    sock.bind(b"\0" + name.encode())
    return sock, "@" + name, None


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest) -> Iterator[ManagerSocket]:
    sock, value, directory = _bind(request.param)
    manager = ManagerSocket(sock, value)
    try:
        yield manager
    finally:
        for notifier in manager.notifiers:
            notifier.close()
        sock.close()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def test_messages_arrive_as_exact_datagrams_in_order(manager: ManagerSocket) -> None:
    notifier = manager.notifier()
    assert notifier.enabled

    notifier.status("connecting to server.ptproxy.test:20010")
    notifier.ready()
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    notifier.watchdog()
    notifier.stopping()

    assert manager.recv() == "STATUS=connecting to server.ptproxy.test:20010\n"
    assert manager.recv() == "READY=1\n"
    reloading = manager.recv()
    lines = reloading.splitlines()
    assert reloading.endswith("\n")
    assert lines[0] == "RELOADING=1"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    assert len(lines) == 2
    assert manager.recv() == "WATCHDOG=1\n"
    assert manager.recv() == "STOPPING=1\n"
    manager.assert_empty()


def test_ready_and_stopping_carry_status_in_the_same_datagram(manager: ManagerSocket) -> None:
    notifier = manager.notifier()
    notifier.ready("tunnel ready")
    notifier.stopping("draining 3 requests")
    assert manager.recv() == "READY=1\nSTATUS=tunnel ready\n"
    assert manager.recv() == "STOPPING=1\nSTATUS=draining 3 requests\n"


def test_status_is_flattened_to_one_line(manager: ManagerSocket) -> None:
    notifier = manager.notifier()
    notifier.status("failed at loading TLS key\nNo such file: /etc/ptproxy/key.pem")
    assert manager.recv() == "STATUS=failed at loading TLS key No such file: /etc/ptproxy/key.pem\n"


def test_status_is_utf8(manager: ManagerSocket) -> None:
    # sdnotify 0.3.2 encodes Latin-1 and silently drops this message.
    manager.notifier().status("peer → ✓")
    assert manager.recv() == "STATUS=peer → ✓\n"


def test_generic_send_keeps_argument_order(manager: ManagerSocket) -> None:
    manager.notifier().send(STATUS="x", ERRNO="2", EXIT_STATUS="1")
    assert manager.recv() == "STATUS=x\nERRNO=2\nEXIT_STATUS=1\n"


def test_send_refuses_a_value_that_would_forge_another_field(manager: ManagerSocket) -> None:
    with pytest.raises(ValueError):
        manager.notifier().send(STATUS="ok\nREADY=1")
    manager.assert_empty()


def test_without_notify_socket_every_call_is_a_noop() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "6000000"})
    assert not notifier.enabled
    notifier.ready()
    notifier.status("x")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    notifier.send(STATUS="x")
    assert notifier.watchdog_interval(2) is None


def test_empty_notify_socket_is_treated_as_unset() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": ""}).enabled


def test_absent_manager_socket_is_tolerated_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ptproxy.systemd")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.ready()
    notifier.watchdog()
    records = [r for r in caplog.records if r.name == "ptproxy.systemd"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG


def test_reconnects_when_the_manager_recreates_its_socket() -> None:
    # daemon-reexec re-creates the notify socket: the old connection is dead (ECONNREFUSED),
    # one message is lost, and the next send connects to the new socket.
    first, path, directory = _bind("path")
    assert directory is not None
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, True)
        stack.callback(first.close)
        notifier = stack.enter_context(Notifier.from_env({"NOTIFY_SOCKET": path}))
        notifier.watchdog()
        first.settimeout(2)
        assert first.recv(4096) == b"WATCHDOG=1\n"

        first.close()
        os.unlink(path)
        second = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        second.bind(path)
        notifier.watchdog()  # lost: still aimed at the old socket
        notifier.status("back")
        second.settimeout(2)
        assert second.recv(4096) == b"STATUS=back\n"


@pytest.mark.parametrize(
    ("env", "factor", "expected"),
    [
        ({"WATCHDOG_USEC": "6000000"}, 2, 3.0),
        ({"WATCHDOG_USEC": "6000000"}, 1, 6.0),
        ({"WATCHDOG_USEC": "6000000", "WATCHDOG_PID": "{pid}"}, 3, 2.0),
        ({"WATCHDOG_USEC": "6000000", "WATCHDOG_PID": "{other}"}, 2, None),
        ({}, 2, None),
        ({"WATCHDOG_USEC": "0"}, 2, None),
        ({"WATCHDOG_USEC": "six"}, 2, None),
    ],
    ids=["half", "whole", "own-pid", "other-pid", "unset", "zero", "garbage"],
)
def test_watchdog_interval(env: dict[str, str], factor: float, expected: float | None) -> None:
    pid = os.getpid()
    env = {k: v.format(pid=pid, other=pid + 1) for k, v in env.items()}
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert notifier.watchdog_interval(factor) == expected


def test_watchdog_interval_rejects_nonpositive_factor() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"})
    with pytest.raises(ValueError):
        notifier.watchdog_interval(0)


def test_watchdog_schedule_with_a_fake_clock() -> None:
    schedule = WatchdogSchedule(3.0)
    assert schedule.due(0.0)  # first ping at once
    schedule.pinged(10.0)
    assert schedule.next_deadline() == 13.0
    assert not schedule.due(12.999)
    assert schedule.due(13.0)
    schedule.pinged(14.5)  # a late ping moves the deadline from when it happened
    assert schedule.next_deadline() == 17.5


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_watchdog_schedule_rejects_bad_intervals(interval: float) -> None:
    with pytest.raises(ValueError):
        WatchdogSchedule(interval)


# Linux's SO_TIMESTAMPNS (asm-generic value; the socket module does not export it). The kernel
# stamps each AF_UNIX datagram when it is sent, so the gaps measured below are the sender's
# cadence, untouched by when this test gets around to reading them.
SO_TIMESTAMPNS = 35


def _drain_with_send_times(sock: socket.socket) -> list[tuple[float, bytes]]:
    sock.setblocking(False)
    got: list[tuple[float, bytes]] = []
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return got
        stamps = [
            struct.unpack("qq", raw[:16])
            for level, kind, raw in ancdata
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
        ]
        if not stamps:
            pytest.skip("no SO_TIMESTAMPNS on this platform")
        sec, nsec = stamps[0]
        got.append((sec + nsec / 1e9, data))


def _watch(
    manager: ManagerSocket, interval: float, run_for: float, block: tuple[float, float] | None
) -> list[float]:
    manager.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    async def main() -> None:
        task = asyncio.create_task(run_watchdog(manager.notifier(), interval))
        if block:
            at, duration = block
            # A callback that hogs the loop, as a hung parser or a sync call would.
            asyncio.get_running_loop().call_later(at, time.sleep, duration)
        await asyncio.sleep(run_for)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    arrivals = _drain_with_send_times(manager.sock)
    assert all(data == b"WATCHDOG=1\n" for _, data in arrivals)
    return [t for t, _ in arrivals]


def test_run_watchdog_pings_at_the_interval(manager: ManagerSocket) -> None:
    # Margins for a loaded 2-core CI machine: 20 intervals run, 5 pings asked for, the median gap
    # within 4x the interval (a stalled or runaway loop is still caught either way).
    times = _watch(manager, interval=0.05, run_for=1.0, block=None)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 5
    assert min(gaps) >= 0.04  # never faster than asked
    assert sorted(gaps)[len(gaps) // 2] < 0.2  # and on the whole, at about the interval


def test_run_watchdog_stops_pinging_while_the_loop_is_blocked(manager: ManagerSocket) -> None:
    # This is the point of pinging from the loop: a hung loop falls silent and systemd kills it.
    block_at, block_for = 0.2, 0.6
    # 1.2 s after the block ends (24 intervals) for the three pings asked of it below.
    times = _watch(manager, interval=0.05, run_for=2.0, block=(block_at, block_for))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= block_for * 0.95
    # ...and pings resume once the loop is free again.
    longest = gaps.index(max(gaps))
    assert len(times) - (longest + 1) >= 3


def test_a_child_process_reaches_the_manager_socket(manager: ManagerSocket) -> None:
    code = textwrap.dedent(
        """
        from ptproxy.ops.systemd import Notifier
        n = Notifier.from_env()
        n.status("starting")
        n.ready()
        interval = n.watchdog_interval(2)
        n.status(f"interval {interval}")
        n.stopping()
        """
    )
    env = {**os.environ, "NOTIFY_SOCKET": manager.env_value, "WATCHDOG_USEC": "6000000"}
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=30)
    got = [manager.recv() for _ in range(4)]
    assert got == ["STATUS=starting\n", "READY=1\n", "STATUS=interval 3.0\n", "STOPPING=1\n"]


# --- the unit file --------------------------------------------------------------------------


def test_unit_file_keeps_the_upstream_recommendation() -> None:
    lines = set(UNIT.read_text().splitlines())
    for setting in [
        "Type=notify",
        "ExecStart=/usr/bin/ptproxy -c /etc/ptproxy/%i.toml",
        "KillSignal=SIGINT",
        "WatchdogSec=6s",
        "DynamicUser=true",
        "Restart=on-failure",
        "RestartSec=5s",
        "NotifyAccess=main",
        "MemoryDenyWriteExecute=true",
        "CapabilityBoundingSet=",
    ]:
        assert setting in lines, setting


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    if not os.access("/usr/bin/ptproxy", os.X_OK):
        # verify insists that ExecStart exists; check everything else against a stand-in.
        stub = tmp_path / "ptproxy"
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        text = text.replace("/usr/bin/ptproxy", str(stub))
    (tmp_path / UNIT.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "ptproxy@demo.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ptproxy@" not in result.stderr, result.stderr


_MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)

    import cffi
    try:
        cffi.FFI().callback("int(int)", lambda x: x)
    except MemoryError:
        pass
    else:
        sys.exit("ffi.callback worked: MDWE is not in force, the probe proves nothing")

    import ssl
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import HandshakeCompleted

    ca, ccert, ckey, scert, skey, sname = sys.argv[1:]
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    server_cfg.load_cert_chain(scert, skey)
    server_cfg.load_verify_locations(ca)
    server_cfg.verify_mode = ssl.CERT_REQUIRED
    client_cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=sname)
    client_cfg.load_cert_chain(ccert, ckey)
    client_cfg.load_verify_locations(ca)

    client = QuicConnection(configuration=client_cfg)
    server = QuicConnection(
        configuration=server_cfg,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    caddr, saddr, now = ("127.0.0.1", 1), ("127.0.0.1", 2), 0.0
    client.connect(saddr, now=now)
    done = set()
    for _ in range(20):
        for src, dst, addr, name in ((client, server, caddr, "c"), (server, client, saddr, "s")):
            for data, _ in src.datagrams_to_send(now):
                dst.receive_datagram(data, addr, now)
        for conn, name in ((client, "client"), (server, "server")):
            while (event := conn.next_event()) is not None:
                if isinstance(event, HandshakeCompleted):
                    done.add(name)
    assert done == {"client", "server"}, done
    print("handshake ok under MDWE")
    """
)


def test_tls_stack_runs_under_memory_deny_write_execute(pki: DemoPki) -> None:
    # The unit sets MemoryDenyWriteExecute=true. prctl(PR_SET_MDWE) (Linux 6.3+) is the same
    # W^X rule systemd applies; a full mutual-TLS QUIC handshake must still work under it.
    args = [str(pki.ca), str(pki.client.cert), str(pki.client.key)]
    args += [str(pki.server.cert), str(pki.server.key), pki.server_name]
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr
    assert "handshake ok under MDWE" in result.stdout
