"""Restarts of the server end: Stateless Reset, the first reconnection at once, the ticket key file.

The client's ``max_idle_timeout`` is 30 s here, so a client that reconnects within 15 s of the
server's restart cannot have waited for its idle timeout: it learned of the restart from the
Stateless Reset the new server process sent in answer to its next packet (a keep-alive PING).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.pair import Pair, ptproxy_cmd, read_text, stop_process, subprocess_env, wait_for

LONG_IDLE = {"transport": {"max_idle_timeout": 30000, "keep_alive_interval": 1000}}
KEY_FILE = "tickets.json"


def _get(pair: Pair, target: str = "/bytes/100") -> int:
    with urllib.request.urlopen(pair.url(target), timeout=10) as resp:
        resp.read()
        return int(resp.status)


def _with_keys() -> dict[str, dict[str, object]]:
    return {**LONG_IDLE, "tls": {"ticket_key_file": KEY_FILE}}


def test_a_restarted_server_resets_the_client_which_reconnects_at_once(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair(LONG_IDLE, _with_keys())
    assert _get(pair) == 200
    key_file = pair.server_toml.parent / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pair.server.proc and pair.server.proc.send_signal(signal.SIGKILL)  # no CONNECTION_CLOSE
    pair.server.wait(10)
    pair.restart_server()  # same port, same ticket key file
    restarted = time.monotonic()
    assert pair.wait_client_log("stateless reset", timeout=15), pair.logs()
    pair.wait_ready(count=2, timeout=15 - (time.monotonic() - restarted))
    assert time.monotonic() - restarted < 15, "the client waited for its idle timeout"
    assert _get(pair) == 200
    # The new process opened the old process's session ticket: the session was resumed.
    assert pair.wait_server_log("(resumed)", timeout=5), pair.logs()


def test_without_a_key_file_the_restarted_server_cannot_resume(make_pair: Callable[..., Pair]) -> None:
    # The same restart without ticket_key_file: the client is not reset (no shared secret), so it
    # only reconnects after its idle timeout; 5 s here keeps the test short.
    pair = make_pair({"transport": {"max_idle_timeout": 5000}}, {"transport": {"max_idle_timeout": 5000}})
    pair.server.proc and pair.server.proc.send_signal(signal.SIGKILL)
    pair.server.wait(10)
    pair.restart_server()
    pair.wait_ready(count=2, timeout=30)
    assert "stateless reset" not in pair.client_log()
    assert _get(pair) == 200
    assert "(resumed)" not in pair.server.current_log()


def _udp_queue(port: int) -> int | None:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port`` (None: unbound)."""
    for line in read_text(Path("/proc/net/udp")).splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            return int(fields[4].split(":")[1], 16)
    return None


def test_a_server_end_answers_the_handshake_that_arrived_while_it_started(make_pair: Callable[..., Pair]) -> None:
    # The new process binds its port before the rest of its start-up (ops/cli.py): a handshake
    # that arrives meanwhile waits in the socket, not answered by ICMP port unreachable. Made
    # deterministic with SIGSTOP: the new process is stopped once its port is bound (retried if
    # it got as far as its endpoint first), the client's handshake is seen queued, then it goes on.
    pair = make_pair(LONG_IDLE, _with_keys())
    assert _get(pair) == 200
    pair.server.stop()
    end = pair.server
    for _ in range(5):
        log = end.config.parent / f"server.{len(end.logs) + 1}.log"
        end.logs.append(log)
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                ptproxy_cmd(end.config, "--log-level", "debug"),
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=end.rundir, env=subprocess_env(),
            )
        end.proc = proc
        bound = wait_for(lambda p=proc: _udp_queue(pair.quic_port) is not None or p.poll() is not None, 30, 0.001)
        proc.send_signal(signal.SIGSTOP)
        assert bound and proc.poll() is None, read_text(log)
        if "started endpoint" not in read_text(log):
            break
        proc.send_signal(signal.SIGCONT)  # it got that far before the stop: again
        stop_process(proc, signal.SIGINT)
    else:
        pytest.fail("the server end never stopped between its bind and its endpoint")
    # Stopped before reading: the client's handshakes wait in the receive queue.
    assert wait_for(lambda: (_udp_queue(pair.quic_port) or 0) > 0, 15), pair.logs()
    proc.send_signal(signal.SIGCONT)
    pair.wait_ready(count=2, timeout=15)
    assert _get(pair) == 200
    text = read_text(log)
    assert text.index("started endpoint") < text.index("established"), text
    assert "(resumed)" in text


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ptproxy_cmd(config, "--check"), capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False
    )


def test_a_corrupt_key_file_fails_check_and_start_with_one_line(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair(LONG_IDLE, _with_keys(), wait=False, start_server=False)
    key_file = pair.server_toml.parent / KEY_FILE
    result = _check(pair.server_toml)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    created = key_file.read_bytes()
    assert _check(pair.server_toml).returncode == 0
    assert key_file.read_bytes() == created  # loaded, not replaced
    key_file.write_text("{not json")
    result = _check(pair.server_toml)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "tls.ticket_key_file" in lines[0] and str(key_file) in lines[0]
    pair.start_server(wait=False)
    assert wait_for(lambda: not pair.server.running, 30)
    assert "tls.ticket_key_file" in pair.server_log()
    os.unlink(key_file)
