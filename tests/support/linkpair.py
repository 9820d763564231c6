"""A ptproxy pair across the user-space link emulator (tools/netem): the origin and the server end
in namespace b, the client end in namespace a, curl run in namespace a. Needs root, TUN and
network namespaces (tests using it are marked ``root``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["LINK_WINDOWS", "LinkPair", "done", "wait"]

# 20 Mbit/s x 20 ms: windows of one BDP and more, so bodies move at the link rate, not at the
# default 14,720-byte window per round trip.
LINK_WINDOWS = {"initial_window": 50_000, "receive_window": 2_000_000, "send_window": 2_000_000}


class LinkPair:
    """Origin and server end in namespace b, client end in namespace a, the emulated link between."""

    def __init__(
        self, link: Any, pki: Any, work: Path, name: str, transport: dict[str, Any], extra: str = "",
        client_args: tuple[str, ...] = (),
    ) -> None:
        self.link, self.work = link, work / name
        self.work.mkdir()
        self.procs: list[subprocess.Popen[Any]] = []
        self.http = f"{link.a_addr}:18080"
        quic_port, origin_port = 18443, 18081
        tr = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in {**LINK_WINDOWS, **transport}.items())
        tls = f'[tls]\nca = "{pki.ca}"\n'
        self.client_conf = self.work / "client.toml"
        self.client_conf.write_text(
            f'[general]\nmode = "Client"\npeer_hostname = "{pki.server_name}"\n'
            f'connect_address = "{link.b_addr}"\nquic_port = {quic_port}\n'
            f'http_bind_address = "{self.http}"\n\n{tls}cert = "{pki.client.cert}"\n'
            f'key = "{pki.client.key}"\n\n[transport]\n{tr}\n[system]\nconnect_interval = 300\n\n{extra}'
        )
        server_conf = self.work / "server.toml"
        server_conf.write_text(
            f'[general]\nmode = "Server"\npeer_hostname = "{pki.client_name}"\n'
            f'bind_address = "{link.b_addr}"\nquic_port = {quic_port}\n'
            f'http_connect_address = "{link.b_addr}:{origin_port}"\n\n{tls}'
            f'cert = "{pki.server.cert}"\nkey = "{pki.server.key}"\n\n[transport]\n{tr}\n{extra}'
        )
        self._spawn("b", ["-m", "tools.origin_server", "--host", link.b_addr, "--port", str(origin_port)],
                    "origin.log")
        self._spawn("b", ["-m", "ptproxy", "-c", str(server_conf)], "server.log")
        assert wait(lambda: "started endpoint" in self.log("server"), 30), self.log("server")
        self._spawn("a", ["-m", "ptproxy", "-c", str(self.client_conf), *client_args], "client.log")
        assert wait(lambda: "tunnel ready" in self.log("client"), 30), self.log("client")

    def _spawn(self, side: str, args: list[str], logname: str) -> None:
        with open(self.work / logname, "wb") as f:
            self.procs.append(self.link.python_in(side, args, stdout=f, stderr=subprocess.STDOUT))

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def log(self, end: str) -> str:
        return (self.work / f"{end}.log").read_text(errors="replace")

    def curl(self, target: str, max_time: float = 40) -> subprocess.Popen[str]:
        """curl in namespace a; the body goes to a file, stdout is ``<status> <bytes>``."""
        out = self.work / f"body-{time.monotonic_ns()}"
        cmd = ["curl", "-s", "-o", str(out), "-w", "%{http_code} %{size_download}",
               "-m", str(max_time), f"http://{self.http}{target}"]
        return self.link.run_in("a", cmd, stdout=subprocess.PIPE, text=True)


def wait(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def done(p: subprocess.Popen[str], timeout: float) -> tuple[int, int, int, float]:
    """(curl exit code, status, bytes, seconds waited) once curl ends; fails the test on a hang."""
    started = time.monotonic()
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"request still running {timeout} s later: it hangs")
    status, size = (out.split() + ["0", "0"])[:2]
    return p.returncode, int(status), int(size), time.monotonic() - started
