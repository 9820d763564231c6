"""Operations: the [metrics] listener (/metrics, /healthz, /readyz) and ``ptproxy healthcheck``.

Real pairs of processes; the metrics are scraped over HTTP and parsed with prometheus_client's
own text parser.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.pair import Pair, free_port, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))


def metrics_pair(make_pair: Callable[..., Pair], **kw: Any) -> tuple[Pair, int, int]:
    cport, sport = free_port(), free_port()
    pair = make_pair(
        {"metrics": {"bind_address": f"127.0.0.1:{cport}"}},
        {"metrics": {"bind_address": f"127.0.0.1:{sport}"}},
        **kw,
    )
    return pair, cport, sport


def fetch(pair: Pair, target: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(pair.url(target), data=body, headers={"Host": "metrics.test"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return resp.status


def healthcheck(config: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ptproxy", "-c", str(config), "healthcheck"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_metrics_count_requests_and_bytes(make_pair: Callable[..., Pair]) -> None:
    pair, cport, sport = metrics_pair(make_pair)
    before_c, before_s = scrape(cport), scrape(sport)
    assert sample(before_c, "ptproxy_tunnel_up") == 1.0
    assert sample(before_s, "ptproxy_tunnel_up") == 1.0
    assert sample(before_c, "ptproxy_connection_attempts_total", result="ok") == 1.0
    assert sample(before_s, "ptproxy_connection_attempts_total", result="ok") == 1.0
    assert sample(before_c, "ptproxy_requests_total", side="client", status="200") != 1.0

    for i in range(5):
        assert fetch(pair, f"/echo?metrics-test={i}", body=b"x" * 100_000) == 200
    after_c, after_s = scrape(cport), scrape(sport)

    assert sample(after_c, "ptproxy_requests_total", side="client", status="200") == 5.0
    assert sample(after_s, "ptproxy_requests_total", side="server", status="200") == 5.0
    assert sample(after_c, "ptproxy_request_duration_seconds_count", side="client") == 5.0
    assert sample(after_s, "ptproxy_request_duration_seconds_count", side="server") == 5.0
    assert sample(after_c, "ptproxy_request_duration_seconds_sum", side="client") > 0
    sent_before = sample(before_c, "ptproxy_quic_bytes_total", direction="sent")
    sent_after = sample(after_c, "ptproxy_quic_bytes_total", direction="sent")
    assert sent_after - sent_before >= 500_000  # the five bodies went out through QUIC
    recv_delta = sample(after_s, "ptproxy_quic_bytes_total", direction="received") - sample(
        before_s, "ptproxy_quic_bytes_total", direction="received"
    )
    assert recv_delta >= 500_000
    for side in (after_c, after_s):
        assert 0 < sample(side, "ptproxy_rtt_smoothed_seconds") < 1.0
        assert 0 < sample(side, "ptproxy_rtt_min_seconds") < 1.0
        assert sample(side, "ptproxy_congestion_window_bytes") > 0
        assert sample(side, "ptproxy_bytes_in_flight") >= 0
        assert sample(side, "ptproxy_lost_packets_total") >= 0
        assert sample(side, "ptproxy_spurious_losses_total") == 0  # no reordering on loopback
        assert sample(side, "ptproxy_open_streams") >= 0
    # Private registry: no default process/GC collectors leak in.
    assert not any(name.startswith(("process_", "python_gc")) for name, _ in after_c)


def test_probes_follow_the_tunnel(make_pair: Callable[..., Pair]) -> None:
    pair, cport, sport = metrics_pair(make_pair)
    assert get(cport, "/healthz")[0] == 200
    assert get(cport, "/readyz") == (200, "tunnel up\n")
    assert get(sport, "/readyz") == (200, "listening\n")
    assert get(cport, "/nope")[0] == 404
    assert healthcheck(pair.client_toml).returncode == 0

    pair.server.kill()
    assert wait_for(lambda: get(cport, "/readyz")[0] == 503, 15), pair.logs()
    status, body = get(cport, "/readyz")
    assert body.startswith("tunnel down: ")
    assert get(cport, "/healthz")[0] == 200  # alive, just not ready
    assert scrape(cport)[("ptproxy_tunnel_up", ())] == 0.0
    hc = healthcheck(pair.client_toml)
    assert hc.returncode == 1 and hc.stdout.startswith("unhealthy: /readyz 503"), hc
    def failed():
        return sample(scrape(cport), "ptproxy_connection_attempts_total", result="failed")
    assert wait_for(lambda: failed() >= 1, 20), pair.logs()

    pair.start_server()
    assert wait_for(lambda: get(cport, "/readyz")[0] == 200, 15), pair.logs()
    samples = scrape(cport)
    assert sample(samples, "ptproxy_connection_attempts_total", result="ok") >= 2
    assert sample(samples, "ptproxy_connection_attempts_total", result="failed") >= 1
    assert healthcheck(pair.client_toml).returncode == 0
    assert healthcheck(pair.server_toml).returncode == 0


def test_readyz_is_503_while_the_client_is_down_from_the_start(make_pair: Callable[..., Pair]) -> None:
    cport = free_port()
    pair = make_pair({"metrics": {"bind_address": f"127.0.0.1:{cport}"}}, start_server=False, wait=False)
    assert wait_for(lambda: pair.wait_client_log("failed", timeout=0.1), 15)
    assert wait_for(lambda: _status(cport) == 503, 10)
    pair.start_server()
    assert wait_for(lambda: _status(cport) == 200, 15), pair.logs()


def _status(port: int) -> int:
    try:
        return get(port, "/readyz")[0]
    except OSError:
        return 0


def test_healthcheck_without_metrics_section(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair()
    hc = healthcheck(pair.client_toml)
    assert hc.returncode == 0 and "HTTP listener" in hc.stdout, hc
    hs = healthcheck(pair.server_toml)
    assert hs.returncode == 0 and "server config loads" in hs.stdout, hs
    pair.client.stop()
    hc = healthcheck(pair.client_toml)
    assert hc.returncode == 1 and hc.stdout.startswith("unhealthy"), hc


def test_healthcheck_reports_a_config_that_does_not_load(tmp_path: Any) -> None:
    missing = tmp_path / "nope.toml"
    hc = healthcheck(missing)
    assert hc.returncode == 1 and hc.stdout.startswith("unhealthy:"), hc
    assert len(hc.stdout.strip().splitlines()) == 1


def test_metrics_port_in_use_is_a_one_line_error(make_pair: Callable[..., Pair]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pair = make_pair({"metrics": {"bind_address": f"127.0.0.1:{port}"}}, wait=False)
        assert pair.client.wait(15) == 1
        assert "ptproxy: error:" in pair.client_log()
        assert "Traceback" not in pair.client_log()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_metrics_count_datagrams_and_report_udp_batching(make_pair: Callable[..., Pair]) -> None:
    pair, cport, sport = metrics_pair(make_pair)
    before_c, before_s = scrape(cport), scrape(sport)
    assert fetch(pair, "/echo?datagrams", body=b"x" * 100_000) == 200
    after_c, after_s = scrape(cport), scrape(sport)

    def delta(before: Samples, after: Samples, direction: str) -> float:
        name = "ptproxy_datagrams_total"
        return sample(after, name, direction=direction) - sample(before, name, direction=direction)

    sent = delta(before_c, after_c, "sent")
    assert sent > 0 and delta(before_s, after_s, "received") > 0 and delta(before_s, after_s, "sent") > 0
    bytes_sent = sample(after_c, "ptproxy_quic_bytes_total", direction="sent") - sample(
        before_c, "ptproxy_quic_bytes_total", direction="sent"
    )
    assert bytes_sent / sent <= 65535, (bytes_sent, sent)  # counted as QUIC datagrams, not batches
    for side in (after_c, after_s):
        features = {f: sample(side, "ptproxy_udp_batching", feature=f) for f in ("recvmmsg", "sendmmsg", "gso", "gro")}
        assert set(features.values()) <= {0.0, 1.0}, features
