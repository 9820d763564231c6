"""Path MTU discovery between two real ends: unset ``max_datagram_size`` raises the datagram size
to what the route carries, capped (loopback's 65536-byte MTU: the 16384 cap, far above Ethernet's
1452), a set one is used as it is (also above 1452), and on an emulated link with a 1300-byte MTU
the search settles at that route's ceiling while transfers go on whole.

The confirmed size is read from what a user sees: the log line each end writes and the
``ptproxy_max_datagram_bytes`` gauge in /metrics.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.pmtu import CEILING, MAX_CEILING, ceiling_for_route
from tests.support.linkpair import LinkPair, done, wait
from tests.support.pair import OriginProcess, Pair, build_pair, free_port

POLL = 60.0


def fetch(pair: Pair, target: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(pair.url(target), timeout=60) as resp:
        return resp.status, resp.read()


def gauge(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def metrics_overrides() -> tuple[int, int, dict[str, Any], dict[str, Any]]:
    cport, sport = free_port(), free_port()
    return cport, sport, {"metrics": {"bind_address": f"127.0.0.1:{cport}"}}, {"metrics": {"bind_address": f"127.0.0.1:{sport}"}}


def test_unset_max_datagram_size_rises_above_1452_on_loopback(tmp_path: Path, pki: DemoPki, origin: OriginProcess) -> None:
    # Loopback's route MTU (65536) lets the search go past Ethernet's 1452, to the cap.
    assert MAX_CEILING > CEILING
    cport, sport, client, server = metrics_overrides()
    pair = build_pair(tmp_path, pki, origin.port, client, server)
    try:
        pair.start_server()
        pair.start_client()
        # Transfers grow the congestion window past one probe of the cap (probes are paced and
        # windowed like any packet), both ways.
        assert fetch(pair, "/bytes/2000000")[0] == 200
        for end, port in (("client", cport), ("server", sport)):
            assert wait(
                lambda port=port: (fetch(pair, "/bytes/200000")[0] == 200
                                   and gauge(port, "ptproxy_max_datagram_bytes") == MAX_CEILING),
                POLL,
            ), (end, pair.logs())
        assert f"path MTU: datagrams of up to {MAX_CEILING} bytes confirmed to the server end" in pair.client_log()
        assert f"path MTU: datagrams of up to {MAX_CEILING} bytes confirmed to the client end" in pair.server_log()
        # Bodies cross whole in the larger datagrams.
        status, body = fetch(pair, "/bytes/3000000")
        assert status == 200 and len(body) == 3_000_000
    finally:
        problems = pair.teardown()
    assert not problems, problems


@pytest.mark.parametrize("size", [1300, 9000])
def test_a_set_max_datagram_size_is_used_as_it_is(tmp_path: Path, pki: DemoPki, origin: OriginProcess, size: int) -> None:
    # Also one above 1452 on a route that carries more (loopback): exactly that, no probes.
    cport, sport, client, server = metrics_overrides()
    for end in (client, server):
        end["transport"] = {"max_datagram_size": size}
    pair = build_pair(tmp_path, pki, origin.port, client, server)
    try:
        pair.start_server()
        pair.start_client()
        for _ in range(5):
            assert fetch(pair, "/bytes/200000")[0] == 200
        status, body = fetch(pair, "/bytes/3000000")
        assert status == 200 and len(body) == 3_000_000
        assert gauge(cport, "ptproxy_max_datagram_bytes") == size
        assert gauge(sport, "ptproxy_max_datagram_bytes") == size
        assert "path MTU" not in pair.client_log() + pair.server_log()
    finally:
        problems = pair.teardown()
    assert not problems, problems


@pytest.fixture(scope="module")
def small_mtu_link() -> Iterator[Any]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    from tools.netem import LinkEmulator, LinkProfile

    ok, why = LinkEmulator.available()
    if not ok:
        pytest.skip(f"link emulator unavailable: {why}")
    profile = LinkProfile(rtt_ms=10, rate_mbit=50, seed=3, mtu=1300)
    with LinkEmulator(profile, prefix=f"ptm{os.getpid() % 100000}") as link:
        yield link


@pytest.mark.root
def test_a_1300_byte_mtu_link_settles_below_it(small_mtu_link: Any, pki: DemoPki, tmp_path: Path) -> None:
    extra = '[metrics]\nbind_address = "127.0.0.1:19465"\n'
    lp = LinkPair(small_mtu_link, pki, tmp_path, "mtu", {}, extra)
    try:
        assert done(lp.curl("/bytes/2000000"), 60)[:3] == (0, 200, 2_000_000), lp.log("client")
        # The route's MTU is the link's (the TUN device's 1300): the search goes no higher than
        # 1300 less IPv6 and UDP headers (1252), which the link carries (IPv4 needs 28 of 1300).
        assert wait(lambda: "path MTU: datagrams of up to" in lp.log("client"), POLL), lp.log("client")
        line = next(ln for ln in lp.log("client").splitlines() if "path MTU: datagrams of up to" in ln)
        size = int(line.split("up to ")[1].split()[0])
        assert size == ceiling_for_route(1300) == 1252, line
        # Later transfers use it and arrive whole; no size above the link's was ever confirmed.
        assert done(lp.curl("/bytes/2000000"), 60)[:3] == (0, 200, 2_000_000), lp.log("client")
        assert "up to 1452" not in lp.log("client") + lp.log("server")
    finally:
        lp.close()
