"""The ptproxy pair the integration tests drive: real ``python -m ptproxy`` processes, each
end's config and certificates in a directory of its own, logs checked for defects; and the test
origin (tools/origin_server.py) as a process.

The pytest fixtures over these (``origin``, ``make_pair``, ``pair``) are in
tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops.devcerts import DemoPki, LeafFiles
from tools.toml_writer import merge, to_toml

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent  # helper scripts run as files (quic_client_nocert.py)

DEFECT_MARKERS = (
    "Traceback",
    "Task exception was never retrieved",
    "Exception in callback",
    "was never awaited",
)
READY_TIMEOUT = 15.0
# Short idle timeout so tunnel-loss tests stay fast; both ends use the same transport settings.
TEST_TRANSPORT = {"max_idle_timeout": 3000, "keep_alive_interval": 1000}
# Bulk transfers: the Rust example's initial window, connection windows big enough that loopback
# is not flow-control-bound (the defaults, 14720 bytes, are sized for a WAN), and an idle timeout
# that a CPU-starved process on a loaded 2-core VM cannot hit by accident mid-transfer.
BULK = {
    "transport": {
        "initial_window": 487500,
        "receive_window": 8_000_000,
        "send_window": 8_000_000,
        "stream_receive_window": 4_000_000,
        "max_idle_timeout": 10000,
        "keep_alive_interval": 2000,
    }
}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback TCP port that refuses connections for the whole block: bound and never listening,
    so nothing else can take it meanwhile (a port from :func:`free_port` is free again once it
    returns, and a pair started after it may be given it for one of its own listeners)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def defects(text: str) -> list[str]:
    return [m for m in DEFECT_MARKERS if m in text]


def ptproxy_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ptproxy", "-c", str(config), *extra]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Signal ``proc`` and wait; SIGKILL if it outlives ``timeout``. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class End:
    """One ptproxy process (restartable); its logs accumulate over restarts."""

    def __init__(self, name: str, config: Path, rundir: Path) -> None:
        self.name = name
        self.config = config
        self.rundir = rundir
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.config.parent / f"{self.name}.{len(self.logs) + 1}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                ptproxy_cmd(self.config),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=self.rundir,
                env=subprocess_env(),
            )
        return self.proc

    def log(self) -> str:
        return "".join(read_text(p) for p in self.logs)

    def current_log(self) -> str:
        return read_text(self.logs[-1]) if self.logs else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Signal and wait; SIGKILL after ``timeout``. Returns the exit status (negative: signal)."""
        assert self.proc is not None
        return stop_process(self.proc, sig, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Pair:
    """A client end and a server end configured for each other, as separate processes."""

    def __init__(
        self,
        directory: Path,
        client_toml: Path,
        server_toml: Path,
        http_port: int,
        quic_port: int,
        origin_port: int | None = None,
    ) -> None:
        self.dir = directory
        self.http_port = http_port
        self.quic_port = quic_port
        self.origin_port = origin_port
        self.client_toml = client_toml
        self.server_toml = server_toml
        rundir = directory / "run"  # not the config's directory: relative paths must not use cwd
        rundir.mkdir(exist_ok=True)
        self.client = End("client", client_toml, rundir)
        self.server = End("server", server_toml, rundir)

    # -- processes ----------------------------------------------------------------------------

    @property
    def proc_client(self) -> subprocess.Popen[bytes]:
        assert self.client.proc is not None
        return self.client.proc

    @property
    def proc_server(self) -> subprocess.Popen[bytes]:
        assert self.server.proc is not None
        return self.server.proc

    def start_server(self, wait: bool = True) -> None:
        self.server.start()
        if wait:
            self.wait_server_endpoint()

    def wait_server_endpoint(self, timeout: float = READY_TIMEOUT) -> None:
        ok = wait_for(
            lambda: "started endpoint at" in self.server.current_log() or not self.server.running,
            timeout,
        )
        if not ok or not self.server.running:
            pytest.fail(f"server end did not start:\n{self.server.current_log()[-3000:]}")

    def start_client(self, wait: bool = True) -> None:
        self.client.start()
        if wait:
            self.wait_ready()

    def wait_ready(self, count: int = 1, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the client log shows ``tunnel ready`` ``count`` times in total."""
        ok = wait_for(
            lambda: self.client_log().count("tunnel ready") >= count or not self.client.running,
            timeout,
        )
        if not ok or not self.client.running:
            pytest.fail(
                f"no tunnel within {timeout:g}s\n--- client log:\n{self.client_log()[-3000:]}"
                f"\n--- server log:\n{self.server_log()[-3000:]}"
            )

    def restart_server(self, wait: bool = True) -> None:
        """Start the server end again (same config, same port) after it stopped or was killed."""
        if self.server.running:
            self.server.stop()
        self.start_server(wait=wait)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> tuple[int, int]:
        """Stop the client end, then the server end; return both exit statuses."""
        return self.client.stop(sig, timeout), self.server.stop(sig, timeout)

    def alive(self) -> bool:
        return self.client.running and self.server.running

    # -- observations -------------------------------------------------------------------------

    def client_log(self) -> str:
        return self.client.log()

    def server_log(self) -> str:
        return self.server.log()

    def wait_client_log(self, text: str, timeout: float = 10.0, count: int = 1) -> bool:
        return bool(wait_for(lambda: self.client_log().count(text) >= count, timeout))

    def wait_server_log(self, text: str, timeout: float = 10.0, count: int = 1) -> bool:
        return bool(wait_for(lambda: self.server_log().count(text) >= count, timeout))

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{target}"

    def logs(self) -> str:
        return f"--- client log:\n{self.client_log()[-4000:]}\n--- server log:\n{self.server_log()[-4000:]}"

    def teardown(self) -> list[str]:
        """Stop whatever still runs; return problems found in the logs."""
        for end in (self.client, self.server):
            if end.proc is not None and end.running:
                end.stop(signal.SIGINT, timeout=10.0)
        problems = []
        for end in (self.client, self.server):
            found = defects(end.log())
            if found:
                problems.append(f"{end.name} end logged {found}:\n{end.log()[-4000:]}")
        return problems


def build_pair(
    directory: Path,
    pki: DemoPki,
    origin_port: int,
    client_overrides: dict[str, Any] | None = None,
    server_overrides: dict[str, Any] | None = None,
    *,
    client_cert: LeafFiles | None = None,
    server_cert: LeafFiles | None = None,
    client_ca: Path | None = None,
    server_ca: Path | None = None,
) -> Pair:
    """Write certificates and both TOML files into ``directory`` (nothing is started)."""
    certs = directory / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    client_cert = client_cert or pki.client
    server_cert = server_cert or pki.server
    shutil.copy(client_ca or pki.ca, certs / "client-ca.crt")
    shutil.copy(server_ca or pki.ca, certs / "server-ca.crt")
    shutil.copy(client_cert.cert, certs / "client.crt")
    shutil.copy(client_cert.key, certs / "client.key")
    shutil.copy(server_cert.cert, certs / "server.crt")
    shutil.copy(server_cert.key, certs / "server.key")
    http_port = free_port(socket.SOCK_STREAM)
    quic_port = free_port(socket.SOCK_DGRAM)
    client = merge(
        {
            "general": {
                "mode": "Client",
                "peer_hostname": pki.server_name,
                "connect_address": "127.0.0.1",
                "quic_port": quic_port,
                "http_bind_address": f"127.0.0.1:{http_port}",
            },
            "tls": {
                "ca": "certs/client-ca.crt",
                "cert": "certs/client.crt",
                "key": "certs/client.key",
            },
            "transport": dict(TEST_TRANSPORT),
            "system": {"connect_interval": 300},
        },
        client_overrides,
    )
    server = merge(
        {
            "general": {
                "mode": "Server",
                "peer_hostname": pki.client_name,
                "bind_address": "127.0.0.1",
                "quic_port": quic_port,
                "http_connect_address": f"127.0.0.1:{origin_port}",
            },
            "tls": {
                "ca": "certs/server-ca.crt",
                "cert": "certs/server.crt",
                "key": "certs/server.key",
            },
            "transport": dict(TEST_TRANSPORT),
        },
        server_overrides,
    )
    (directory / "client.toml").write_text(to_toml(client))
    (directory / "server.toml").write_text(to_toml(server))
    return Pair(
        directory,
        directory / "client.toml",
        directory / "server.toml",
        http_port,
        quic_port,
        origin_port,
    )


# -- the origin ---------------------------------------------------------------------------------


def spawn_listening(args: list[str], stderr_path: Path, what: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python <args>`` from the repository root, a test server whose first stdout line is
    ``listening on <port>``; return the process and that port (stderr goes to ``stderr_path``)."""
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"{what} did not start: {line!r} {read_text(stderr_path)}")
    return proc, int(line.split()[-1])


class OriginProcess:
    def __init__(self, directory: Path) -> None:
        self.log_path = directory / "origin.log"
        self.proc, self.port = spawn_listening(
            ["-m", "tools.origin_server", "--port", "0"], self.log_path, "origin"
        )

    def log(self) -> list[dict[str, Any]]:
        """Every request the origin received (head, target, whether its body arrived whole)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_log", timeout=10) as resp:
            return json.loads(resp.read())

    def entries(self, marker: str) -> list[dict[str, Any]]:
        return [e for e in self.log() if marker in e["target"]]

    def stderr(self) -> str:
        return read_text(self.log_path)

    def close(self) -> None:
        stop_process(self.proc, timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def vmrss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
