"""The server end faces the internet: floods of junk and of unauthenticated handshakes (issue 11).

Real processes: a pair carrying a working tunnel, and in this process a junk-Initial sender and
stock aioquic clients without a certificate (benchmarks/flood/senders.py). Checked: the tunnel
keeps serving, the server's memory stays bounded, /metrics counts refusals by reason, the log
holds summary lines only, Retry works for our client, ``allowed_sources`` drops strangers, and
half-open handshakes die after ``handshake_timeout``. Bounds are generous and every wait polls
with a deadline: a loaded 2-core machine must not make these flake.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.flood.senders import JunkFlood, run_handshake_flood
from ptproxy.ops.devcerts import DemoPki
from tests.support.pair import Pair, free_port, vmrss_kib, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
MIB = 1024  # KiB
# Lines a flood may add to the server log: first-of-a-kind lines and per-interval summaries.
REFUSAL_LINE = re.compile(r"refused|handshake|dropped", re.I)


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def refused(samples: Samples, reason: str) -> float:
    return samples.get(("ptproxy_handshakes_refused_total", (("reason", reason),)), 0.0)


def metric(samples: Samples, name: str) -> float:
    return samples.get((name, ()), float("nan"))


def flood_pair(
    make_pair: Callable[..., Pair],
    limits: dict[str, Any] | None = None,
    transport: dict[str, Any] | None = None,
    wait: bool = True,
    **general: Any,
) -> tuple[Pair, int]:
    port = free_port()
    server: dict[str, Any] = {"metrics": {"bind_address": f"127.0.0.1:{port}"}}
    if limits:
        server["limits"] = limits
    if transport:
        server["transport"] = transport
    if general:
        server["general"] = general
    return make_pair(None, server, wait=wait), port


def get(pair: Pair, target: str, timeout: float = 10.0) -> int:
    req = urllib.request.Request(pair.url(target), headers={"Host": "flood.test"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()
        return resp.status


def refusal_lines(pair: Pair) -> list[str]:
    return [line for line in pair.server_log().splitlines() if REFUSAL_LINE.search(line)]


def test_junk_and_handshake_floods_cost_little(make_pair: Callable[..., Pair], pki: DemoPki) -> None:
    pair, mport = flood_pair(make_pair, {"handshake_timeout": 2000})
    for _ in range(5):
        assert get(pair, "/bytes/100") == 200
    pid = pair.proc_server.pid
    rss_before = vmrss_kib(pid)
    peak = rss_before
    statuses: list[int] = []
    target = ("127.0.0.1", pair.quic_port)
    # Junk from four addresses (so some pass the per-source limit and must fail decryption) and
    # real certificate-less handshakes from four others, at the same time.
    hs_thread, outcomes = run_handshake_flood(
        pair.quic_port,
        ca=str(pki.ca),
        server_name=pki.server_name,
        duration=5.0,
        concurrency=6,
        sources=[f"127.0.1.{i}" for i in range(1, 5)],
    )
    with JunkFlood(target, 5000, sources=[f"127.0.0.{i}" for i in range(1, 5)]) as flood:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            statuses.append(get(pair, "/bytes/100"))
            peak = max(peak, vmrss_kib(pid))
            time.sleep(0.05)
    hs_thread.join(60)
    assert flood.sent > 5_000, flood.sent  # of 25,000 asked; a loaded machine sends fewer
    assert sum(outcomes.values()) > 0, outcomes
    # The tunnel served throughout and still does.
    assert statuses and all(s == 200 for s in statuses), statuses
    assert all(get(pair, "/bytes/100") == 200 for _ in range(5))
    peak = max(peak, vmrss_kib(pid))
    assert peak - rss_before < 60 * MIB, f"RSS grew {(peak - rss_before) / MIB:.1f} MiB"
    samples = scrape(mport)
    for reason in ("undecryptable", "rate_limited", "tls_failed"):
        assert refused(samples, reason) > 0, (reason, samples, outcomes)
    # Half-open handshakes are gone within handshake_timeout (plus generous slack).
    assert wait_for(lambda: metric(scrape(mport), "ptproxy_handshakes_in_progress") == 0, 15.0)
    assert metric(scrape(mport), "ptproxy_tunnel_up") == 1.0
    # The log: a few lines, not one per packet or attempt (summaries come every 10 s).
    assert pair.wait_server_log("refused", timeout=15.0)
    summary = r"refused [\d,]+ handshakes? in the last \d+ s: \w+ \(sample peer "
    # The first summary is due 10 s after the first refusal; a loaded machine may write it later.
    assert wait_for(lambda: any(re.search(summary, line) for line in refusal_lines(pair)), 40.0), refusal_lines(pair)
    lines = refusal_lines(pair)
    assert 0 < len(lines) <= 20, "\n".join(lines[:40])


def test_retry_always_and_our_client_follows_it(make_pair: Callable[..., Pair]) -> None:
    pair, mport = flood_pair(make_pair, {"retry_threshold": 0})
    assert get(pair, "/bytes/10") == 200
    samples = scrape(mport)
    assert metric(samples, "ptproxy_retries_sent_total") >= 1
    assert refused(samples, "invalid_token") == 0


def test_retry_kicks_in_under_a_handshake_flood_and_a_client_still_connects(
    make_pair: Callable[..., Pair], pki: DemoPki
) -> None:
    pair, mport = flood_pair(make_pair, {"retry_threshold": 3})
    hs_thread, outcomes = run_handshake_flood(
        pair.quic_port,
        ca=str(pki.ca),
        server_name=pki.server_name,
        duration=6.0,
        concurrency=8,
        sources=[f"127.0.2.{i}" for i in range(1, 9)],
    )
    try:
        assert wait_for(lambda: metric(scrape(mport), "ptproxy_retries_sent_total") > 0, 5.0), outcomes
        # A client end (re)connecting now goes through Retry and gets its tunnel.
        pair.client.stop()
        pair.start_client(wait=False)
        pair.wait_ready(count=2, timeout=30.0)
        assert get(pair, "/bytes/10") == 200
    finally:
        hs_thread.join(60)
    assert refused(scrape(mport), "tls_failed") > 0, outcomes


def test_allowed_sources_drop_strangers(make_pair: Callable[..., Pair]) -> None:
    closed_pair, mport = flood_pair(make_pair, wait=False, allowed_sources=["192.0.2.0/24", "2001:db8::/32"])
    with JunkFlood(("127.0.0.1", closed_pair.quic_port), 2000):
        time.sleep(2.0)
    assert closed_pair.wait_client_log("failed", timeout=15.0), closed_pair.logs()
    assert "tunnel ready" not in closed_pair.client_log()
    samples = scrape(mport)
    # ~4,000 junk datagrams were sent; on a loaded machine the kernel drops many before the
    # server reads them (seen: 366), so only require that a good number were read and refused.
    assert refused(samples, "not_allowed") > 100
    assert refused(samples, "undecryptable") == 0  # dropped before any parsing
    assert len(refusal_lines(closed_pair)) <= 5, closed_pair.server_log()
    closed_pair.client.stop()
    # The same with the client's network allowed: the tunnel works.
    open_pair, _ = flood_pair(make_pair, allowed_sources=["192.0.2.0/24", "127.0.0.0/8"])
    assert get(open_pair, "/bytes/10") == 200


def test_a_stalled_handshake_dies_after_handshake_timeout(make_pair: Callable[..., Pair]) -> None:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    # The idle timeout is long: only handshake_timeout can end these connections this soon.
    pair, mport = flood_pair(make_pair, {"handshake_timeout": 1000}, {"max_idle_timeout": 30000})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _i in range(1, 4):
            quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["h3"]))
            quic.connect(("127.0.0.1", pair.quic_port), now=0.0)
            sock.sendto(quic.datagrams_to_send(now=0.0)[0][0], ("127.0.0.1", pair.quic_port))
        assert wait_for(lambda: metric(scrape(mport), "ptproxy_handshakes_in_progress") == 3, 10.0)
        # ...and never answered: gone after 1 s, counted, one line in the log.
        started = time.monotonic()
        assert wait_for(lambda: metric(scrape(mport), "ptproxy_handshakes_in_progress") == 0, 20.0)
        assert time.monotonic() - started < 20.0
    assert wait_for(lambda: refused(scrape(mport), "handshake_timeout") == 3, 5.0)
    assert pair.wait_server_log("handshake_timeout")
    assert get(pair, "/bytes/10") == 200
