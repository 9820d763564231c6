"""The systems under test. Each starts its processes (via ProcessGroups, so teardown is shared),
exposes the HTTP endpoint the load generator talks to, and names its proxy processes for the
CPU/RSS accounting.

- ``direct``: no proxy, the load generator talks to the origin (the floor).
- ``ptproxy`` / ``ptproxy-pure``: ``python -m ptproxy --config …`` client and server ends
  (``-pure``: PTPROXY_NO_EXTENSIONS=1).
- ``nginx``: client-side nginx (HTTP in, ``proxy_pass https`` with upstream keepalive, client
  certificate) to server-side nginx (TLS 1.3, ``ssl_verify_client on``) to the origin (keepalive).
- ``caddy``: client-side Caddy ``reverse_proxy`` over HTTP/3 (``transport http { versions 3 }``,
  ``tls_client_auth``, ``tls_trust_pool``) to server-side Caddy that requires client certificates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.config import caddy_pair_confs, nginx_pair_confs, ptproxy_configs
from benchmarks.harness.ports import free_ports
from benchmarks.harness.procs import (
    Managed,
    ProcessGroups,
    accepting,
    caddy_cmd,
    caddy_env,
    listening,
    log_has,
    nginx_cmd,
    ptproxy_cmd,
    python_env,
    read_text,
    wait_until,
)
from ptproxy.ops.devcerts import DemoPki

from .machine import CpuPlan
from .places import Place

START_TIMEOUT = 60.0


@dataclass
class Endpoint:
    host: str
    port: int


@dataclass
class Context:
    place: Place
    plan: CpuPlan
    groups: ProcessGroups
    pki: DemoPki
    workdir: Path
    origin_port: int
    proxy_cores: int


@dataclass
class System:
    name: str
    ctx: Context
    proxies: dict[str, Managed] = field(default_factory=dict)  # "client_end"/"server_end"
    info: dict[str, Any] = field(default_factory=dict)
    # Prometheus endpoints of the proxy processes (ptproxy: both ends), scraped around scenarios.
    metrics_urls: list[str] = field(default_factory=list)

    def start(self, poll: float = 0.05) -> Endpoint:
        """Start the processes; ``poll``: seconds between readiness checks (the launch scenario
        polls finely so the wait adds little to what it measures)."""
        raise NotImplementedError

    def check(self) -> None:
        """After the measurements: verify whatever the system claims (e.g. the hop protocol)."""

    def stop(self) -> None:
        for m in reversed(list(self.proxies.values())):
            self.ctx.groups.stop(m)

    # helpers
    def _dir(self) -> Path:
        d = self.ctx.workdir / f"{self.ctx.place.name}-{self.name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _run(self, role: str, side: str, cmd: list[str], log: Path, **kw: Any) -> Managed:
        full = self.ctx.place.prefix(side) + self.ctx.plan.prefix(role) + cmd
        m = self.ctx.groups.start(f"{self.name}:{role}", full, log, **kw)
        self.proxies[role] = m
        return m


class Direct(System):
    def start(self, poll: float = 0.05) -> Endpoint:
        return Endpoint(self.ctx.place.addr("b"), self.ctx.origin_port)


class Ptproxy(System):
    pure = False

    def start(self, poll: float = 0.05) -> Endpoint:
        d = self._dir()
        pki, place = self.ctx.pki, self.ctx.place
        http_port, quic_port = free_ports(2)
        transport: dict[str, Any] = {}
        if place.emulated:  # as the README advises: initial_window = the link's BDP
            rate = place.params.get("rate_mbit") or 1000.0
            bdp = int(rate * 1e6 / 8 * place.params.get("rtt_ms", 1.0) / 1000)
            transport["initial_window"] = self.info["initial_window"] = max(14720, bdp)
        # Each end serves /metrics: the scenarios read packets per request from both ends.
        client_metrics, server_metrics = free_ports(2)
        self.metrics_urls = [f"http://{place.addr('a')}:{client_metrics}/metrics",
                             f"http://{place.addr('b')}:{server_metrics}/metrics"]
        client, server = ptproxy_configs(
            d, pki, http_port=http_port, quic_port=quic_port, origin=f"{place.addr('b')}:{self.ctx.origin_port}",
            client_addr=place.addr("a"), server_addr=place.addr("b"), transport=transport,
            client_extra={"metrics": {"bind_address": f"{place.addr('a')}:{client_metrics}"}},
            server_extra={"metrics": {"bind_address": f"{place.addr('b')}:{server_metrics}"}},
        )
        env = python_env(pure=self.pure)
        # The logs are appended to (a launch restarts the pair in the same directory): a line
        # counts only if this start wrote it, i.e. one more than the log held before.
        logs = {end: d / f"{end}.log" for end in ("server", "client")}
        seen = {(end, line): read_text(path).count(line) for end, path in logs.items()
                for line in ("tunnel ready", "ready to serve")}  # fmt: skip
        srv = self._run("server_end", "b", ptproxy_cmd(server), logs["server"], env=env, cwd=d)
        wait_until(lambda: listening(srv.pid, quic_port, udp=True), START_TIMEOUT, "ptproxy server end", srv, step=poll)
        cli = self._run("client_end", "a", ptproxy_cmd(client), logs["client"], env=env, cwd=d)
        # The sockets are bound early (cli.py): "listening" no longer means serving. Both ends log
        # "ready to serve" once they take requests (the server end may still be starting when the
        # client end's handshake completes: it answers datagrams queued while it started); the
        # client end's only after all its listeners started, so its HTTP port is not polled: each
        # look at /proc/<pid>/net/tcp (listening()) walks the kernel's whole TCP table, ~1-2.5 ms
        # of CPU here, which every 2 ms while the client end started took half a core from the
        # two ends (it did, in a launch: the logs held the previous start's lines).
        wait_until(lambda: log_has(logs["client"], "tunnel ready", seen["client", "tunnel ready"] + 1),
                   START_TIMEOUT, "tunnel ready", cli, step=poll)  # fmt: skip
        for end, what in ((srv, "server"), (cli, "client")):
            wait_until(lambda what=what: log_has(logs[what], "ready to serve", seen[what, "ready to serve"] + 1),
                       START_TIMEOUT, f"ptproxy {what} end ready", end, step=poll)  # fmt: skip
        self.info["speedups"] = "pure" if self.pure else "compiled"
        return Endpoint(place.addr("a"), http_port)


class PtproxyPure(Ptproxy):
    pure = True


class NginxPair(System):
    def start(self, poll: float = 0.05) -> Endpoint:
        d = self._dir()
        pki, place = self.ctx.pki, self.ctx.place
        http_port, tls_port = free_ports(2)
        workers = self.ctx.proxy_cores
        cconf, sconf = nginx_pair_confs(
            d / "client", d / "server", pki, client_addr=place.addr("a"), server_addr=place.addr("b"),
            http_port=http_port, tls_port=tls_port, origin=f"{place.addr('b')}:{self.ctx.origin_port}",
            workers=workers, listen_options="reuseport backlog=4096",
        )
        srv = self._run("server_end", "b", nginx_cmd(sconf), d / "server.log")
        wait_until(lambda: listening(srv.pid, tls_port), START_TIMEOUT, "server-side nginx", srv, step=poll)
        cli = self._run("client_end", "a", nginx_cmd(cconf), d / "client.log")
        wait_until(lambda: accepting(place.addr("a"), http_port), START_TIMEOUT, "client-side nginx", cli, step=poll)
        self.info["workers_per_end"] = workers
        self.info["hop"] = "HTTP/1.1 over TLS 1.3 (TCP), mTLS, upstream keepalive"
        return Endpoint(place.addr("a"), http_port)


class CaddyPair(System):
    def start(self, poll: float = 0.05) -> Endpoint:
        d = self._dir()
        pki, place = self.ctx.pki, self.ctx.place
        http_port, h3_port = free_ports(2)
        a, b = place.addr("a"), place.addr("b")
        self.access_log = d / "server-access.log"
        self.access_log.unlink(missing_ok=True)
        client_conf, server_conf = caddy_pair_confs(
            d, d, pki, client_addr=a, server_addr=b, http_port=http_port, h3_port=h3_port,
            origin=f"{b}:{self.ctx.origin_port}", access_log=self.access_log,
        )
        env = caddy_env(d, self.ctx.proxy_cores)
        srv = self._run("server_end", "b", caddy_cmd(server_conf), d / "server.log", env=env, cwd=d)
        wait_until(lambda: listening(srv.pid, h3_port, udp=True), START_TIMEOUT, "server-side caddy (UDP)", srv, step=poll)
        cli = self._run("client_end", "a", caddy_cmd(client_conf), d / "client.log", env=env, cwd=d)
        # accepting, not listening: see procs.accepting (a poll every 2 ms while its client end starts)
        wait_until(lambda: accepting(a, http_port), START_TIMEOUT, "client-side caddy", cli, step=poll)
        self.info["gomaxprocs"] = self.ctx.proxy_cores
        return Endpoint(a, http_port)

    def check(self) -> None:
        """Count the protocols the server-side Caddy logged for the probe requests (those with an
        ``X-Bench-Probe`` header: the first request after ready and one after the measurements;
        the rest are not logged so logging costs nothing during the measurements)."""
        protos: dict[str, int] = {}
        try:
            lines = self.access_log.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                proto = json.loads(line).get("request", {}).get("proto", "?")
            except ValueError:
                continue
            protos[proto] = protos.get(proto, 0) + 1
        total = sum(protos.values())
        self.info["hop_protocols"] = protos
        self.info["hop_is_http3"] = bool(total) and protos.get("HTTP/3.0", 0) == total


SYSTEMS: dict[str, type[System]] = {
    "direct": Direct,
    "ptproxy": Ptproxy,
    "ptproxy-pure": PtproxyPure,
    "nginx": NginxPair,
    "caddy": CaddyPair,
}
