"""Prometheus metrics for one ptproxy end, in base units, on a private registry.

Request counters and the duration histogram are updated as requests finish
(:meth:`Metrics.request_done`, the frontend/backend ``on_request_done`` callback). Everything about
the tunnel (up, RTT, window, bytes, losses, streams) is read at scrape time by a custom collector
from the live sessions, so nothing polls. Counters that live on a session (bytes, losses) are
folded into a process total when the session finishes, so they only ever grow.

The server end adds per-route figures: requests by route and status, a latency histogram per
route, the pending queue's wait time (updated as requests finish or leave the queue), and, read at
scrape time from the backend's route table, each origin's state (1 UP, 0 DOWN), its requests in
flight and each route's pending queue length.

The registry is ours, not ``prometheus_client.REGISTRY``: two ends in one process (``ptproxy
demo``, tests) must not collide, and the global default collectors (process, GC) stay out.

``prometheus_client`` is imported at the first scrape, not at start-up (~20-25 ms of imports on
the path to serving): the counters and histograms updated per request are plain objects here
(:class:`_Counter`, :class:`_Histogram`) that render the same samples as ``prometheus_client``'s
own (``_total``/``_bucket``/``_count``/``_sum``/``_created``), and cost a dict lookup per update.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ptproxy.tunnel import PACKET_KINDS

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from ptproxy.client.dialer import TunnelState
    from ptproxy.server.listener import Listener
    from ptproxy.server.origin import Backend
    from ptproxy.tunnel import Session

__all__ = ["Metrics", "CONTENT_TYPE", "DURATION_BUCKETS"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A long-RTT link: requests take from a few ms (loopback) to tens of seconds (large bodies).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Waiting for an origin to come UP: from a probe interval (seconds) to a long pending_timeout.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Side = Literal["client", "server"]
_C = TypeVar("_C")
_SESSION_COUNTERS = (
    "bytes_sent", "bytes_received", "lost_packets", "flow_blocked_send", "flow_blocked_receive",
    "redundant_bytes", "spurious_losses",
    "datagrams_sent", "datagrams_received",
    *(f"packets_sent_{kind}" for kind in PACKET_KINDS),
)
# Flow-control windows of the current session (they tune themselves unless set in the file).
_WINDOW_KINDS = (("receive", "window_receive"), ("stream_receive", "window_stream_receive"), ("send", "window_send"))


def _use_created() -> bool:
    """Whether ``_created`` samples are rendered: prometheus_client's own switch, read the same way."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


class _CounterChild:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds  # sorted upper bounds, +Inf last
        self.counts = [0.0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # le: the first bound >= amount


class _Family:
    """A labelled counter or histogram whose samples match ``prometheus_client``'s own."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self._child()
        return child

    def _child(self) -> Any:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [self._metric()]

    def _metric(self) -> Metric:
        from prometheus_client.metrics_core import Metric

        return Metric(self.name, self.doc, self.kind)

    kind = ""


class _Counter(_Family):
    kind = "counter"

    def _child(self) -> _CounterChild:
        return _CounterChild()

    def collect(self) -> list[Metric]:
        metric = self._metric()
        created = _use_created()
        for values, child in list(self.children.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            metric.add_sample(self.name + "_total", labels, child.value)
            if created:
                metric.add_sample(self.name + "_created", labels, child.created)
        return [metric]


class _Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, doc, labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets)) + (float("inf"),)

    def _child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def collect(self) -> list[Metric]:
        from prometheus_client import utils

        go_string: Callable[[float], str] = utils.floatToGoString  # untyped upstream: "+Inf", "0.005"
        metric = self._metric()
        created = _use_created()
        for values, child in list(self.children.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            acc = 0.0
            for bound, count in zip(self.bounds, child.counts, strict=True):
                acc += count
                metric.add_sample(self.name + "_bucket", {**labels, "le": go_string(bound)}, acc)
            metric.add_sample(self.name + "_count", labels, acc)
            metric.add_sample(self.name + "_sum", labels, child.sum)
            if created:
                metric.add_sample(self.name + "_created", labels, child.created)
        return [metric]


class Metrics:
    """The metrics of one end. ``tunnel_state`` is given on the client end only."""

    def __init__(self, side: Side, tunnel_state: TunnelState | None = None) -> None:
        self.side = side
        self.tunnel_state = tunnel_state
        # What the registry collects, in order; the registry itself is made at the first scrape.
        self._collectors: list[Any] = []
        self._registry: CollectorRegistry | None = None
        self._live: set[Session] = set()
        self._retired = dict.fromkeys(_SESSION_COUNTERS, 0.0)
        self._server_ok = 0
        self._server_failed = 0
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        # Server end: the listener whose admission step counts refused handshakes.
        self.listener: Listener | None = None
        self.requests = self._add(_Counter(
            "ptproxy_requests",
            "HTTP requests answered, by end and status code.",
            ["side", "status"],
        ))
        self.duration = self._add(_Histogram(
            "ptproxy_request_duration_seconds",
            "Time from request head to the end of the response, by end.",
            ["side"],
            buckets=DURATION_BUCKETS,
        ))
        self._add(_TunnelCollector(self))
        # TCP stream routes, at both ends (``direction``: to_origin, to_client).
        self.tcp_streams = self._add(_Counter(
            "ptproxy_tcp_streams", "TCP streams opened (relaying), by route.", ["route"]
        ))
        self.tcp_closed_streams = self._add(_Counter(
            "ptproxy_tcp_streams_closed", "TCP streams closed, by route.", ["route"]
        ))
        self.tcp_byte_count = self._add(_Counter(
            "ptproxy_tcp_bytes",
            "Bytes relayed on TCP streams, by route and direction (to_origin, to_client).",
            ["route", "direction"],
        ))
        self._tcp_children: dict[tuple[str, str], Any] = {}
        # Server end: the backend whose route table the route collector reads.
        self.backend: Backend | None = None
        self._route_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        if side == "server":
            self.route_requests = self._add(_Counter(
                "ptproxy_route_requests",
                "Requests answered by the server end, by route and status code.",
                ["route", "status"],
            ))
            self.route_duration = self._add(_Histogram(
                "ptproxy_route_request_duration_seconds",
                "Time from request head to the end of the response at the server end, by route.",
                ["route"],
                buckets=DURATION_BUCKETS,
            ))
            self.pending_wait = self._add(_Histogram(
                "ptproxy_route_pending_wait_seconds",
                "Time requests waited in a route's pending queue for an origin to come UP.",
                ["route"],
                buckets=WAIT_BUCKETS,
            ))
            self._add(_RouteCollector(self))

    def _add(self, collector: _C) -> _C:
        self._collectors.append(collector)
        return collector

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry of this end's collectors (made, and prometheus_client imported,
        on first use: a scrape)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry(auto_describe=True)
            for collector in self._collectors:
                registry.register(collector)
            self._registry = registry
        return self._registry

    # -- updates ----------------------------------------------------------------------------

    def request_done(self, side: str, status: int, seconds: float) -> None:
        """The frontend/backend ``on_request_done`` callback."""
        # labels() hashes and locks on every call (~2% of a loaded end's CPU in a profile); the
        # children it returns are stable, so keep them.
        key = (side, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(side, str(status)), self.duration.labels(side))
            self._children[key] = children
        children[0].inc()
        children[1].observe(max(0.0, seconds))

    def route_done(self, route: str, status: int, seconds: float) -> None:
        """The backend's ``on_route_done`` callback (server end)."""
        key = (route, status)
        children = self._route_children.get(key)
        if children is None:
            children = (self.route_requests.labels(route, str(status)), self.route_duration.labels(route))
            self._route_children[key] = children
        children[0].inc()
        children[1].observe(max(0.0, seconds))

    def waited(self, route: str, seconds: float) -> None:
        """The backend's ``on_wait`` callback: a request left a route's pending queue."""
        self.pending_wait.labels(route).observe(max(0.0, seconds))

    def tcp_opened(self, route: str) -> None:
        """A TCP stream of ``route`` started relaying (splice.TcpMeter)."""
        self.tcp_streams.labels(route).inc()

    def tcp_closed(self, route: str) -> None:
        self.tcp_closed_streams.labels(route).inc()

    def tcp_bytes(self, route: str, direction: str, nbytes: int) -> None:
        # Called for every chunk relayed: keep the labelled children (labels() locks and hashes).
        key = (route, direction)
        child = self._tcp_children.get(key)
        if child is None:
            child = self._tcp_children[key] = self.tcp_byte_count.labels(route, direction)
        child.inc(nbytes)

    def track(self, session: Session) -> None:
        """Follow a new session (Dialer/Listener ``on_session``) until it finishes."""
        self._live.add(session)
        session.finished.add_done_callback(lambda _f: self._retire(session))

    def _retire(self, session: Session) -> None:
        if session not in self._live:
            return
        self._live.discard(session)
        stats = session.stats()
        for key in _SESSION_COUNTERS:
            self._retired[key] += stats.get(key, 0.0)
        if self.side == "server":
            if session.handshake_done:
                self._server_ok += 1
            else:
                self._server_failed += 1

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    # -- collect-time figures ---------------------------------------------------------------

    def sessions(self) -> list[Session]:
        return list(self._live)

    def current(self) -> Session | None:
        """The session the gauges describe: the newest established one still open."""
        up = [s for s in self._live if s.handshake_done and not s.closed.done()]
        return max(up, key=lambda s: s.number) if up else None

    def tunnel_up(self) -> bool:
        if self.tunnel_state is not None:
            return self.tunnel_state.up
        return self.current() is not None

    def attempts(self) -> tuple[float, float]:
        """(ok, failed) connection attempts: dialed (client) or accepted (server)."""
        if self.tunnel_state is not None:
            return float(self.tunnel_state.attempts_ok), float(self.tunnel_state.attempts_failed)
        live_ok = sum(1 for s in self._live if s.handshake_done)
        return float(self._server_ok + live_ok), float(self._server_failed)

    def session_totals(self) -> dict[str, float]:
        totals = dict(self._retired)
        for session in self._live:
            stats = session.stats()
            for key in _SESSION_COUNTERS:
                totals[key] += stats.get(key, 0.0)
        return totals


class _RouteCollector:
    """Reads the server end's routes when Prometheus scrapes: origin states, load, queues."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "ptproxy_origin_up", "1 while the origin is UP, 0 while DOWN, by route and origin.",
            labels=["route", "origin"],
        )
        in_flight = GaugeMetricFamily(
            "ptproxy_origin_requests_in_flight", "Requests in flight to the origin, by route and origin.",
            labels=["route", "origin"],
        )
        pending = GaugeMetricFamily(
            "ptproxy_route_pending", "Requests waiting in the route's pending queue.", labels=["route"]
        )
        backend = self._m.backend
        for name, route in (backend.routes.items() if backend is not None else ()):
            pending.add_metric([name], float(route.pending))
            for origin in route.origins.values():
                up.add_metric([name, origin.address], float(origin.health.up))
                in_flight.add_metric([name, origin.address], float(origin.in_flight))
        return [up, in_flight, pending]


class _TunnelCollector:
    """Reads the tunnel's figures when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None, False, (0.0, 0.0), dict.fromkeys(_SESSION_COUNTERS, 0.0), 0.0))

    def collect(self) -> Iterable[Metric]:
        m = self._m
        current = m.current()
        stats = current.stats() if current is not None else None
        open_streams = sum(s.stats()["open_streams"] for s in m.sessions() if not s.closed.done())
        families = list(self._families(stats, m.tunnel_up(), m.attempts(), m.session_totals(), open_streams))
        if m.listener is not None:
            families += self._admission(m.listener)
        families += self._udp(m.session_totals())
        return families

    @staticmethod
    def _udp(totals: dict[str, float]) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from ptproxy.tunnel import udp_features

        datagrams = CounterMetricFamily(
            "ptproxy_datagrams", "UDP datagrams of QUIC traffic, by direction.", labels=["direction"]
        )
        datagrams.add_metric(["sent"], totals["datagrams_sent"])
        datagrams.add_metric(["received"], totals["datagrams_received"])
        packets = CounterMetricFamily(
            "ptproxy_packets_sent",
            "QUIC packets sent, by kind: ack (ACK-only), data (request-stream data), qpack (QPACK "
            "stream data only), control (other ack-eliciting frames), handshake (Initial/Handshake).",
            labels=["kind"],
        )
        for kind in PACKET_KINDS:
            packets.add_metric([kind], totals[f"packets_sent_{kind}"])
        batching = GaugeMetricFamily(
            "ptproxy_udp_batching",
            "1 for each batched UDP feature in use (recvmmsg, sendmmsg, gso, gro), else 0.",
            labels=["feature"],
        )
        for feature, used in udp_features().items():
            batching.add_metric([feature], float(used))
        return [datagrams, packets, batching]

    @staticmethod
    def _admission(listener: Listener) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        admission = listener.admission
        refused = CounterMetricFamily(
            "ptproxy_handshakes_refused",
            "New QUIC connections refused before authentication, by reason.",
            labels=["reason"],
        )
        for reason, count in admission.refused.items():
            refused.add_metric([reason], float(count))
        return [
            refused,
            CounterMetricFamily(
                "ptproxy_retries_sent",
                "Stateless Retry packets sent (address validation under load).",
                value=float(admission.retries_sent),
            ),
            GaugeMetricFamily(
                "ptproxy_handshakes_in_progress",
                "QUIC handshakes started and not yet authenticated or dropped.",
                value=float(listener.handshakes_in_progress),
            ),
        ]

    @staticmethod
    def _families(
        stats: dict[str, float] | None,
        up: bool,
        attempts: tuple[float, float],
        totals: dict[str, float],
        open_streams: float,
    ) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "ptproxy_tunnel_up", "1 while the QUIC session to the peer is established.", value=float(up)
        )
        fam = CounterMetricFamily(
            "ptproxy_connection_attempts", "QUIC connection attempts, by result.", labels=["result"]
        )
        fam.add_metric(["ok"], attempts[0])
        fam.add_metric(["failed"], attempts[1])
        yield fam
        gauges: Iterable[tuple[str, str, str]] = (
            ("ptproxy_rtt_smoothed_seconds", "smoothed_rtt", "Smoothed round-trip time of the current session."),
            ("ptproxy_rtt_min_seconds", "min_rtt", "Minimum round-trip time of the current session."),
            ("ptproxy_congestion_window_bytes", "congestion_window", "Congestion window of the current session."),
            ("ptproxy_bytes_in_flight", "bytes_in_flight", "Bytes sent and not yet acknowledged (current session)."),
            (
                "ptproxy_stream_credit",
                "stream_slots_free",
                "Request streams this end may open at once on the current session: the peer's "
                "stream limit (MAX_STREAMS) not yet used (client end: requests beyond it queue).",
            ),
            (
                "ptproxy_max_datagram_bytes",
                "max_datagram_size",
                "Largest UDP payload the current session sends (raised by path MTU discovery).",
            ),
        )
        for name, key, doc in gauges:
            # No session: no sample (a gap in the graph), rather than a misleading zero.
            fam_g = GaugeMetricFamily(name, doc)
            if stats is not None:
                fam_g.add_metric([], stats[key])
            yield fam_g
        yield CounterMetricFamily(
            "ptproxy_lost_packets", "QUIC packets declared lost.", value=totals["lost_packets"]
        )
        yield CounterMetricFamily(
            "ptproxy_spurious_losses",
            "QUIC packets acknowledged after they were declared lost (the path reordered them; "
            "each connection's loss detection then waits 9/8 RTT instead of 1).",
            value=totals["spurious_losses"],
        )
        yield CounterMetricFamily(
            "ptproxy_redundant_bytes",
            'Bytes sent only to shorten the loss tail: copies by redundancy = "Tail", '
            'tail-probe datagrams by "Probe".',
            value=totals["redundant_bytes"],
        )
        fam = CounterMetricFamily(
            "ptproxy_quic_bytes", "UDP payload bytes of QUIC traffic, by direction.", labels=["direction"]
        )
        fam.add_metric(["sent"], totals["bytes_sent"])
        fam.add_metric(["received"], totals["bytes_received"])
        yield fam
        yield GaugeMetricFamily("ptproxy_open_streams", "HTTP/3 request streams open.", value=open_streams)
        fam_w = GaugeMetricFamily(
            "ptproxy_flow_window_bytes",
            "Flow-control windows of the current session: connection receive, largest stream "
            "receive, send (unacknowledged bytes allowed).",
            labels=["kind"],
        )
        if stats is not None:
            for kind, key in _WINDOW_KINDS:
                if key in stats:
                    fam_w.add_metric([kind], stats[key])
        yield fam_w
        fam = CounterMetricFamily(
            "ptproxy_flow_blocked_seconds",
            "Time QUIC flow control held data back: send (our data waited for the peer's credit), "
            "receive (the peer had used all the credit we gave).",
            labels=["direction"],
        )
        fam.add_metric(["send"], totals["flow_blocked_send"])
        fam.add_metric(["receive"], totals["flow_blocked_receive"])
        yield fam
