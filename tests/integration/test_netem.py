"""The user-space link emulator (tools/netem).

The model tests run anywhere (fake clock). The link tests need root, /dev/net/tun and network
namespaces, and are skipped with the reason when those are missing. Bounds are chosen so that a
loaded 2-core machine does not flake them, while a broken feature (no delay, no rate limit,
wrong counters, no cleanup) fails them.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tools.netem import Direction, DirectionParams, LinkEmulator, LinkProfile, netns
from tools.netem.emulator import REPO_ROOT, python_env

TOOLS = "tools.netem.tools"
# ping and the emulator read the clock at different instants: a delivery may look a few
# microseconds early, never more than this.
CLOCK_SLACK_MS = 0.5


# ---------------------------------------------------------------------------------------------
# model (no root)


def _drain(d: Direction, until: float) -> list[tuple[float, bytes]]:
    return d.pop_due(until)


def _pkt(n: int, proto: int = 17) -> bytes:
    return bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto]) + b"\0" * (n - 10)


def test_model_rate_serializes_and_queue_drops_tail() -> None:
    d = Direction(DirectionParams(rate=8e6, delay=0.010, queue_packets=5))  # 1 byte per us
    for _ in range(10):
        d.ingress(_pkt(1000), 0.0)
    assert d.c.queue_drops == 5 and d.c.pkts_in == 10
    due = [t for t, _ in _drain(d, 1.0)]
    assert due == pytest.approx([0.011, 0.012, 0.013, 0.014, 0.015])
    # at t = 2.5 ms two packets have left the serializer: room for exactly two more
    d2 = Direction(DirectionParams(rate=8e6, queue_packets=5))
    for _ in range(5):
        d2.ingress(_pkt(1000), 0.0)
    for _ in range(4):
        d2.ingress(_pkt(1000), 0.0025)
    assert d2.c.queue_drops == 2
    assert [t for t, _ in _drain(d2, 1.0)][-1] == pytest.approx(0.007)


def test_model_default_queue_is_one_bdp() -> None:
    p = DirectionParams(rate=100e6, rtt_hint=0.05)
    assert p.effective_limits() == (1000, 625000)
    assert DirectionParams(rate=1e6, rtt_hint=0.01).effective_limits() == (1000, 48000)
    assert DirectionParams(queue_packets=7).effective_limits() == (7, math.inf)


def test_model_jitter_keeps_fifo_unless_reorder() -> None:
    for reorder in (False, True):
        d = Direction(DirectionParams(delay=0.01, jitter=0.005, reorder=reorder), seed=3)
        for i in range(2000):
            d.ingress(_pkt(100) + i.to_bytes(2, "big"), i * 1e-4)
        out = _drain(d, 10.0)
        due = [t for t, _ in out]
        order = [int.from_bytes(p[-2:], "big") for _, p in out]
        assert len(out) == 2000 and min(due) >= 0.005 - 1e-12
        assert due == sorted(due)
        inversions = sum(1 for x, y in zip(order, order[1:]) if y < x)
        if reorder:
            assert inversions > 100
        else:
            assert order == list(range(2000))


def test_model_loss_bernoulli_and_bursts() -> None:
    n = 100_000
    d = Direction(DirectionParams(loss=0.05), seed=1)
    for _i in range(n):
        d.ingress(_pkt(100), 0.0)
    assert abs(d.c.lost - 0.05 * n) < 5 * math.sqrt(n * 0.05 * 0.95)
    g = Direction(DirectionParams(loss=0.05, loss_burst=4), seed=2)
    lost = []
    for _i in range(n):
        before = g.c.lost
        g.ingress(_pkt(100), 0.0)
        lost.append(g.c.lost > before)
    runs, cur = [], 0
    for x in lost:
        if x:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    assert 0.035 * n < sum(lost) < 0.065 * n
    assert 3.0 < sum(runs) / len(runs) < 5.0  # mean burst length ~4


def test_model_blackout_and_counters() -> None:
    d = Direction(DirectionParams(delay=0.001))
    d.blackout_until = 1.0
    d.ingress(_pkt(100), 0.5)
    d.ingress(_pkt(100, proto=6), 1.5)
    for _, p in _drain(d, 9.0):
        d.delivered(p)
    s = d.snapshot(9.0)
    assert (s["pkts_in"], s["blackout_drops"], s["delivered"]) == (2, 1, 1)
    assert s["protos"]["ipv4/udp"]["blackout_drops"] == 1
    assert s["protos"]["ipv4/tcp"]["delivered"] == 1


def test_model_counters_reset_with_packets_in_flight() -> None:
    d = Direction(DirectionParams(delay=0.010))
    d.ingress(_pkt(100), 0.0)
    d.reset_counters()  # the packet is still on the delay line
    for _, p in _drain(d, 1.0):
        d.delivered(p)
    s = d.snapshot(1.0)
    assert (s["pkts_in"], s["delivered"]) == (0, 1)
    assert s["protos"]["ipv4/udp"]["delivered"] == 1


# ---------------------------------------------------------------------------------------------
# real links (root)


@pytest.fixture(scope="module")
def netem_ok() -> None:
    ok, why = LinkEmulator.available()
    if not ok:
        pytest.skip(f"link emulator unavailable: {why}")


def _prefix(tag: str) -> str:
    return f"ptt{os.getpid() % 100000}{tag}"


def _tool(link: LinkEmulator, side: str, *args: str) -> subprocess.Popen[str]:
    return link.python_in(side, ["-m", TOOLS, *args], stdout=subprocess.PIPE, text=True)


def _ready(p: subprocess.Popen[str], timeout: float = 10.0) -> None:
    assert p.stdout is not None
    r, _, _ = select.select([p.stdout], [], [], timeout)
    assert r, "tool did not report ready"
    msg = json.loads(p.stdout.readline())
    assert msg.get("ready"), msg


def _result(p: subprocess.Popen[str], timeout: float = 20.0) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    lines = [x for x in out.splitlines() if x.strip()]
    res: dict[str, Any] = json.loads(lines[-1])
    return res


def _ping(link: LinkEmulator, dst: str, count: int = 10, interval: float = 0.02) -> dict[str, Any]:
    p = _tool(link, "a", "ping", dst, "--count", str(count), "--interval", str(interval))
    res = _result(p)
    assert res["received"] == count, res
    return res


def _gone(prefix: str) -> bool:
    names = netns.list_namespaces()
    return not any(n.startswith(prefix + "-") for n in names)


@pytest.mark.root
@pytest.mark.usefixtures("netem_ok")
class TestLink:
    def test_ping_rtt_delay_and_baseline(self) -> None:
        with LinkEmulator(LinkProfile(rtt_ms=40, seed=1), prefix=_prefix("p")) as link:
            res = _ping(link, link.b_addr)
            assert 40.0 - CLOCK_SLACK_MS <= res["min_ms"] <= 44.0, res
            assert sorted(res["rtts_ms"])[len(res["rtts_ms"]) // 2] <= 48.0, res
            res6 = _ping(link, link.b_addr6, count=5)
            assert 40.0 - CLOCK_SLACK_MS <= res6["min_ms"] <= 44.0, res6
            link.set(rtt_ms=0)
            base = _ping(link, link.b_addr)
            assert base["min_ms"] < 3.0, base
            link.set(direction="a_to_b", delay_ms=30)  # asymmetric: 30 ms there, 0 back
            asym = _ping(link, link.b_addr, count=5)
            assert 30.0 - CLOCK_SLACK_MS <= asym["min_ms"] <= 34.0, asym
            st = link.stats()
            assert st["a_to_b"]["protos"]["ipv4/icmp"]["delivered"] == 25
            assert st["b_to_a"]["protos"]["ipv4/icmp"]["delivered"] == 25
            assert st["a_to_b"]["protos"]["ipv6/icmpv6"]["delivered"] >= 5

    def test_tcp_rate_limit_each_direction(self) -> None:
        # one direction at a time: concurrent bulk transfers would queue each other's ACKs
        # behind data (realistic, but it is TCP's rate then, not the limiter's)
        profile = LinkProfile(rtt_ms=10, rate_mbit=20, rate_mbit_ba=10, seed=1)
        res = {}
        with LinkEmulator(profile, prefix=_prefix("r")) as link:
            runs = (("a", "b", "5201", 5_000_000), ("b", "a", "5202", 2_500_000))
            for src, dst, port, nbytes in runs:
                recv = _tool(link, dst, "tcp-recv", "--port", port)
                _ready(recv)
                send = _tool(link, src, "tcp-send", link.addr(dst), port, "--bytes", str(nbytes))
                res[src + dst] = _result(recv)
                _result(send)
                assert res[src + dst]["bytes"] == nbytes
            st = link.stats()
        # goodput: TCP payload is ~96.5% of the IP bytes the limiter counts
        assert 0.80 * 20 <= res["ab"]["mbit"] <= 1.05 * 20, res["ab"]
        assert 0.80 * 10 <= res["ba"]["mbit"] <= 1.05 * 10, res["ba"]
        for d in ("a_to_b", "b_to_a"):
            s = st[d]
            assert s["pkts_in"] == s["delivered"] + s["queue_drops"] + s["lost"] + s["inflight"]

    def test_random_loss_counts_match_receiver(self) -> None:
        n, p = 2000, 0.10
        with LinkEmulator(LinkProfile(loss=p, seed=7), prefix=_prefix("l")) as link:
            recv = _tool(link, "b", "udp-recv", "--port", "5301", "--idle", "1.0")
            _ready(recv)
            link.reset_stats()
            send = _tool(link, "a", "udp-send", link.b_addr, "5301", "--count", str(n),
                         "--size", "200", "--pps", "4000")  # fmt: skip
            sent = _result(send)
            got = _result(recv)
            udp = link.stats()["a_to_b"]["protos"]["ipv4/udp"]
            kern = link.kernel_stats()
        assert sent["sent"] == n and kern["a"]["tx"]["dropped"] == 0
        assert udp["in"] == n
        assert udp["delivered"] + udp["lost"] == n
        assert got["count"] == udp["delivered"], (got, udp)  # exactly what the receiver saw
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(udp["lost"] - n * p) <= 5 * sigma, udp
        assert got["duplicates"] == 0 and got["out_of_order"] == 0

    def test_udp_tap_logs_the_ports_datagrams_where_they_cross(self) -> None:
        with LinkEmulator(LinkProfile(rtt_ms=10, seed=1), prefix=_prefix("t")) as link:
            taps = {side: _tool(link, side, "udp-tap", "--ports", "5401") for side in ("a", "b")}
            for tap in taps.values():
                _ready(tap)
            recv = _tool(link, "b", "udp-recv", "--port", "5401", "--idle", "0.5")
            _ready(recv)
            _result(_tool(link, "a", "udp-send", link.b_addr, "5402", "--count", "3", "--size", "50"))
            _result(_tool(link, "a", "udp-send", link.b_addr, "5401", "--count", "5", "--size", "100"))
            assert _result(recv)["count"] == 5
            logs = {}
            for side, tap in taps.items():
                tap.terminate()
                out, _ = tap.communicate(timeout=10)
                logs[side] = [json.loads(x) for x in out.splitlines() if x.strip()]
        # Only port 5401's datagrams, once each where they cross: leaving a, entering b, in order.
        sent, got = logs["a"], logs["b"]
        assert [(x["dir"], x["dst"], x["len"]) for x in sent] == [("out", f"{link.b_addr}:5401", 100)] * 5
        assert [(x["dir"], x["dst"], x["len"]) for x in got] == [("in", f"{link.b_addr}:5401", 100)] * 5
        assert all(x["src"].startswith(f"{link.a_addr}:") for x in sent + got)
        assert all(o["t"] < i["t"] for o, i in zip(sent, got, strict=True))

    def test_queue_overflow_drops_and_serialization(self) -> None:
        profile = LinkProfile(rate_mbit=1, queue_packets=20, seed=1)
        with LinkEmulator(profile, prefix=_prefix("q")) as link:
            recv = _tool(link, "b", "udp-recv", "--port", "5401", "--idle", "1.5", "--records")
            _ready(recv)
            link.reset_stats()
            send = _tool(link, "a", "udp-send", link.b_addr, "5401", "--count", "200",
                         "--size", "1000", "--pps", "20000")  # fmt: skip
            sent = _result(send)
            got = _result(recv)
            s = link.stats()["a_to_b"]
        assert sent["sent"] == 200
        udp = s["protos"]["ipv4/udp"]
        assert udp["in"] == 200 and udp["delivered"] + udp["queue_drops"] == 200
        assert got["count"] == udp["delivered"]
        # a 200-packet burst into 20 slots draining at 8.2 ms per packet: most are dropped
        burst = sent["seconds"]
        assert udp["queue_drops"] >= 200 - 20 - burst / 0.008224 - 5, (udp, burst)
        assert udp["queue_drops"] >= 100
        # delivered packets leave the serializer one 1028-byte packet time apart
        times = [r[2] for r in got["records"]]
        spacing = (times[-1] - times[0]) / (len(times) - 1)
        assert 0.9 * 0.008224 <= spacing <= 1.15 * 0.008224, spacing

    def test_blackout_drops_everything_then_recovers(self) -> None:
        with LinkEmulator(LinkProfile(rtt_ms=10, seed=1), prefix=_prefix("b")) as link:
            recv = _tool(link, "b", "udp-recv", "--port", "5501", "--idle", "2.0", "--records")
            _ready(recv)
            link.reset_stats()
            send = _tool(link, "a", "udp-send", link.b_addr, "5501", "--count", "500",
                         "--pps", "200")  # fmt: skip  (2.5 s)
            time.sleep(0.8)
            start, until = link.blackout(1.0)
            sent = _result(send)
            got = _result(recv)
            s = link.stats()["a_to_b"]
        assert sent["sent"] == 500
        recs = got["records"]
        seqs = {r[0] for r in recs}
        send_ts = {r[0]: r[1] for r in recs}
        # nothing sent well inside the blackout got through
        assert not [q for q, ts in send_ts.items() if start + 0.02 < ts < until - 0.02]
        assert s["blackout_drops"] >= 150  # ~200 were sent during the 1 s blackout
        assert s["delivered"] + s["blackout_drops"] == 500 == s["pkts_in"]
        assert got["count"] == s["delivered"]
        # loss 0 otherwise: the dropped datagrams are one contiguous run, the blackout, of
        # about 1 s x 200/s, and everything sent after it arrived (recovery)
        dropped = set(range(500)) - seqs
        assert max(dropped) - min(dropped) + 1 == len(dropped), sorted(dropped)
        assert 150 <= len(dropped) <= 215 and max(seqs) == 499

    def test_jitter_fifo_then_reorder(self) -> None:
        profile = LinkProfile(rtt_ms=20, jitter_ms=5, seed=5)
        with LinkEmulator(profile, prefix=_prefix("j")) as link:
            res = []
            for reorder, port in ((False, "5601"), (True, "5602")):
                link.set(reorder=reorder)
                recv = _tool(link, "b", "udp-recv", "--port", port, "--idle", "0.5", "--records")
                _ready(recv)
                send = _tool(link, "a", "udp-send", link.b_addr, port, "--count", "400",
                             "--pps", "1000")  # fmt: skip
                _result(send)
                res.append(_result(recv))
        fifo, reord = res
        assert fifo["count"] == 400 and fifo["out_of_order"] == 0
        owd = [r[2] - r[1] for r in fifo["records"]]
        assert min(owd) >= 0.0049 and max(owd) - min(owd) >= 0.004, (min(owd), max(owd))
        assert reord["count"] == 400 and reord["out_of_order"] > 20


@pytest.mark.root
@pytest.mark.usefixtures("netem_ok")
class TestLifecycle:
    def test_teardown_on_exception_kills_children(self) -> None:
        prefix = _prefix("t")
        with pytest.raises(RuntimeError, match="boom"):
            with LinkEmulator(LinkProfile(), prefix=prefix) as link:
                assert {link.ns_a, link.ns_b} <= set(netns.list_namespaces())
                child = link.run_in_a(["sleep", "60"])
                fw_pid = json.loads(netns.pid_path(prefix).read_text())["pid"]
                raise RuntimeError("boom")
        assert child.returncode is not None
        assert _gone(prefix)
        assert not Path(f"/proc/{fw_pid}").exists() or not netns._alive(fw_pid)
        assert not netns.control_path(prefix).exists()

    def test_stale_namespaces_are_replaced_and_cli_cleanup(self) -> None:
        prefix = _prefix("s")
        netns.ip("netns", "add", f"{prefix}-a")
        with LinkEmulator(LinkProfile(), prefix=prefix) as link:
            assert _ping(link, link.b_addr, count=2)["received"] == 2
        assert _gone(prefix)
        netns.ip("netns", "add", f"{prefix}-b")
        r = subprocess.run(
            [sys.executable, "-m", "tools.netem", "cleanup", "--prefix", prefix],
            capture_output=True, text=True, env=python_env(), cwd=REPO_ROOT, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0 and f"{prefix}-b" in r.stdout
        assert _gone(prefix)

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
    def test_owner_killed_leaves_nothing(self, sig: signal.Signals) -> None:
        prefix = _prefix(f"k{int(sig)}")
        script = textwrap.dedent(
            f"""
            import sys, time
            from tools.netem import LinkEmulator
            from tools.netem import LinkProfile
            with LinkEmulator(LinkProfile(rtt_ms=10), prefix={prefix!r}) as link:
                link.run_in_b(["sleep", "60"])
                print("up", flush=True)
                time.sleep(60)
            """
        )
        p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env=python_env(), cwd=REPO_ROOT)  # fmt: skip
        try:
            assert p.stdout is not None
            r, _, _ = select.select([p.stdout], [], [], 15)
            assert r and p.stdout.readline().strip() == "up"
            assert not _gone(prefix)
            p.send_signal(sig)
            p.wait(timeout=15)
            deadline = time.monotonic() + 10  # SIGKILL: the forwarder cleans up on its own
            while not _gone(prefix) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _gone(prefix)
            assert not netns.pid_path(prefix).exists()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
            netns.cleanup(prefix)

    def test_cli_runs_command_and_control(self) -> None:
        prefix = _prefix("c")
        # the command, run in the root namespace, drives the control socket and a ping in ns a
        inner = textwrap.dedent(
            f"""
            import json, os, subprocess, sys
            ctl = [sys.executable, "-m", "tools.netem", "ctl", "--prefix", {prefix!r}]
            r = subprocess.run(ctl + ["set", "loss=0.5", "a_to_b.delay_ms=15"],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
            bad = subprocess.run(ctl + ["set", "nonsense=1"], capture_output=True, text=True)
            assert bad.returncode == 1 and "nonsense" in bad.stdout
            st = json.loads(subprocess.run(ctl + ["stats"], capture_output=True, text=True).stdout)
            assert st["stats"]["params"]["a_to_b"]["loss"] == 0.5
            assert st["stats"]["params"]["a_to_b"]["delay"] == 0.015
            assert os.environ["NETEM_NS_A"] == {prefix + "-a"!r}
            subprocess.run(ctl + ["set", "loss=0"], check=True, capture_output=True)
            ping = subprocess.run(["ip", "netns", "exec", os.environ["NETEM_NS_A"],
                                   sys.executable, "-m", "tools.netem.tools", "ping",
                                   os.environ["NETEM_B_ADDR"], "--count", "3",
                                   "--interval", "0.02"], capture_output=True, text=True)
            res = json.loads(ping.stdout)
            assert res["received"] == 3 and {15 - CLOCK_SLACK_MS} <= res["min_ms"] <= 19, res
            sys.exit(7)
            """
        )
        r = subprocess.run(
            [sys.executable, "-m", "tools.netem", "--prefix", prefix, "--rtt", "0",
             "--seed", "1", "--", sys.executable, "-c", inner],
            capture_output=True, text=True, env=python_env(), cwd=REPO_ROOT, timeout=60,
        )  # fmt: skip
        assert r.returncode == 7, r.stdout + r.stderr
        assert "a_to_b: in" in r.stdout and "scheduling:" in r.stdout
        assert _gone(prefix)

    def test_available_reports(self) -> None:
        ok, why = LinkEmulator.available()
        assert ok and why == "ok"
