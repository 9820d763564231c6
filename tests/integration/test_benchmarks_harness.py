"""The benchmark harness's start-up waits (benchmarks/e2e/systems.py, benchmarks/harness/procs.py):
a launch restarts a pair in the same directory, whose logs are appended to, so a readiness line
counts only if this start wrote it; and the cheap TCP probe the pair systems poll with."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from benchmarks.e2e.machine import CpuPlan
from benchmarks.e2e.places import PlaceContext
from benchmarks.e2e.systems import Context, Ptproxy
from benchmarks.harness.ports import free_port
from benchmarks.harness.procs import ProcessGroups, accepting, read_text
from ptproxy.ops.devcerts import make_demo_pki


def test_accepting_is_true_only_for_a_listening_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not accepting("127.0.0.1", port)  # bound, not listening: refused
        sock.listen(1)
        assert accepting("127.0.0.1", port)  # in the backlog counts


def test_a_second_start_in_the_same_directory_waits_for_its_own_readiness_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No compile_package and no signal handlers in the test process (ProcessGroups.install).
    monkeypatch.setattr(ProcessGroups, "install", lambda self: None)
    groups = ProcessGroups()
    with PlaceContext("loopback") as place:
        try:
            ctx = Context(place, CpuPlan(), groups, make_demo_pki(tmp_path / "pki"), tmp_path, free_port(), 1)
            system = Ptproxy("ptproxy", ctx)
            for starts in (1, 2):
                system.start(poll=0.01)
                client_log = system.proxies["client_end"].log
                server_log = system.proxies["server_end"].log
                # Returned only once this start's client logged both lines and its server end
                # its own "ready to serve", not on the previous start's lines.
                assert read_text(client_log).count("tunnel ready") >= starts
                assert read_text(client_log).count("ready to serve") == starts
                assert read_text(server_log).count("ready to serve") == starts
                system.stop()
                system.proxies.clear()
        finally:
            groups.stop_all()
