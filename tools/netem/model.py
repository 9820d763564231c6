"""The per-direction link model: rate limit with a drop-tail queue, random loss, delay and jitter.

Pure code (no I/O, no clock of its own): the forwarder feeds packets in with the time it read
them and asks which packets are due. That keeps it testable with a fake clock.

Order of effects for a packet that enters a direction at time ``now``:

1. blackout: if a blackout is active the packet is dropped (``blackout_drops``);
2. bottleneck: with a rate limit the packet joins a drop-tail FIFO in front of a serializer of
   ``rate`` bits/s. If the queue (packets still waiting or being serialized) is full it is dropped
   (``queue_drops``); otherwise it leaves the serializer at ``tx_end = max(now, prev_tx_end) +
   size*8/rate``. Without a rate limit ``tx_end = now``;
3. random loss (Bernoulli or Gilbert-Elliott bursts): a lost packet has still used the link's
   time, as on a real wire (``lost``);
4. propagation: the packet is delivered at ``tx_end + delay + jitter``. Unless ``reorder`` is set,
   a packet never departs before the one ahead of it (FIFO), so jitter does not reorder.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

INF = math.inf

# Indexes into the per-protocol counter lists.
P_IN, P_DELIVERED, P_LOST, P_QUEUE, P_BLACKOUT = range(5)
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


def proto_key(pkt: bytes) -> int:
    """A cheap classification key: ``version << 8 | protocol`` (IPv6 ext. headers not walked)."""
    if not pkt:
        return 0
    v = pkt[0] >> 4
    if v == 4 and len(pkt) > 9:
        return 0x400 | pkt[9]
    if v == 6 and len(pkt) > 6:
        return 0x600 | pkt[6]
    return v << 8


def proto_name(key: int) -> str:
    v, p = key >> 8, key & 0xFF
    if v not in (4, 6):
        return f"ipv{v}?"
    return f"ipv{v}/{_PROTO_NAMES.get(p, str(p))}"


@dataclass
class DirectionParams:
    """Parameters of one direction of the link. Times in seconds, rate in bits/s."""

    delay: float = 0.0  # one-way propagation delay, s
    jitter: float = 0.0  # s; uniform in [-j, +j] or normal with sd j (clipped so delay >= 0)
    jitter_dist: str = "uniform"  # "uniform" | "normal"
    reorder: bool = False  # allow jitter to reorder packets
    loss: float = 0.0  # long-run loss probability
    loss_burst: float = 0.0  # mean loss-burst length in packets (Gilbert-Elliott); <= 1: Bernoulli
    rate: float = 0.0  # bits/s; 0 = unlimited (no serialization, no queue)
    queue_packets: int | None = None  # drop-tail limit in packets (None: see effective_limits)
    queue_bytes: int | None = None  # drop-tail limit in bytes (None: see effective_limits)
    rtt_hint: float = 0.0  # s; the round-trip time used to size the default queue (one BDP)

    def effective_limits(self) -> tuple[float, float]:
        """(packet limit, byte limit) of the bottleneck queue.

        Neither limit given: one BDP (rate x RTT) of bytes, at least 32 full-size packets, and at
        most 1000 packets. One given: only that one applies.
        """
        if self.queue_packets is None and self.queue_bytes is None:
            bdp = self.rate * self.rtt_hint / 8.0
            return 1000.0, float(max(int(bdp), 32 * 1500))
        qp = float(self.queue_packets) if self.queue_packets is not None else INF
        qb = float(self.queue_bytes) if self.queue_bytes is not None else INF
        return qp, qb

    def validate(self) -> None:
        if self.delay < 0 or self.jitter < 0 or self.rate < 0:
            raise ValueError("delay, jitter and rate must be >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss must be within [0, 1]")
        if self.jitter_dist not in ("uniform", "normal"):
            raise ValueError("jitter_dist must be 'uniform' or 'normal'")
        if self.queue_packets is not None and self.queue_packets < 1:
            raise ValueError("queue_packets must be >= 1")
        if self.queue_bytes is not None and self.queue_bytes < 1:
            raise ValueError("queue_bytes must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PARAM_TYPES: dict[str, Callable[[str], Any]] = {}
for _f in fields(DirectionParams):
    PARAM_TYPES[_f.name] = {
        "jitter_dist": str,
        "reorder": lambda s: str(s).lower() in ("1", "true", "yes", "on"),
        "queue_packets": lambda s: None if str(s).lower() in ("none", "", "default") else int(s),
        "queue_bytes": lambda s: None if str(s).lower() in ("none", "", "default") else int(s),
    }.get(_f.name, float)


@dataclass
class Counters:
    pkts_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    lost: int = 0
    queue_drops: int = 0
    blackout_drops: int = 0
    overflow_drops: int = 0  # delay line full (safety cap, only without a rate limit)
    write_errors: int = 0
    protos: dict[int, list[int]] = field(default_factory=dict)


class Direction:
    """One direction of the link: :meth:`ingress` each packet, :meth:`pop_due` to deliver."""

    MAX_INFLIGHT = 200_000  # safety cap on the delay line

    def __init__(self, params: DirectionParams, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.c = Counters()
        self.blackout_until = -INF
        # bottleneck queue: (tx_end, size) of packets not yet fully serialized
        self._bq: deque[tuple[float, int]] = deque()
        self._bq_bytes = 0
        self._tx_free = -INF
        # delay line: deque of (due, pkt) when FIFO; heap of (due, seq, pkt) when reordering
        self._line: deque[tuple[float, bytes]] = deque()
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._last_due = -INF
        self._ge_bad = False
        self.params = params
        self.configure(params)

    # -- configuration ---------------------------------------------------------------------
    def configure(self, params: DirectionParams) -> None:
        params.validate()
        if self.params.reorder and not params.reorder and self._heap:
            # switch heap -> FIFO line, keeping due order
            while self._heap:
                due, _, pkt = heapq.heappop(self._heap)
                self._line.append((due, pkt))
            self._last_due = self._line[-1][0] if self._line else self._last_due
        elif params.reorder and not self.params.reorder and self._line:
            for due, pkt in self._line:
                self._seq += 1
                heapq.heappush(self._heap, (due, self._seq, pkt))
            self._line.clear()
        self.params = params
        self._delay = params.delay
        self._jitter = params.jitter
        self._normal = params.jitter_dist == "normal"
        self._reorder = params.reorder
        self._loss = params.loss
        if params.loss_burst > 1.0 and 0.0 < params.loss < 1.0:
            self._ge = True
            self._ge_p_bg = 1.0 / params.loss_burst
            self._ge_p_gb = min(1.0, params.loss / ((1.0 - params.loss) * params.loss_burst))
        else:
            self._ge = False
        self._rate = params.rate
        self._inv_rate = 8.0 / params.rate if params.rate > 0 else 0.0
        self._qp, self._qb = params.effective_limits()
        if params.rate <= 0:
            self._bq.clear()
            self._bq_bytes = 0
            self._tx_free = -INF

    def reset_counters(self) -> None:
        self.c = Counters()

    # -- data path -------------------------------------------------------------------------
    def ingress(self, pkt: bytes, now: float) -> None:
        c = self.c
        n = len(pkt)
        c.pkts_in += 1
        c.bytes_in += n
        key = proto_key(pkt)
        pc = c.protos.get(key)
        if pc is None:
            pc = c.protos[key] = [0, 0, 0, 0, 0]
        pc[P_IN] += 1
        if now < self.blackout_until:
            c.blackout_drops += 1
            pc[P_BLACKOUT] += 1
            return
        if self._rate > 0:
            bq = self._bq
            while bq and bq[0][0] <= now:
                self._bq_bytes -= bq.popleft()[1]
            if len(bq) + 1 > self._qp or self._bq_bytes + n > self._qb:
                c.queue_drops += 1
                pc[P_QUEUE] += 1
                return
            start = max(now, self._tx_free)
            t = start + n * self._inv_rate
            self._tx_free = t
            bq.append((t, n))
            self._bq_bytes += n
        else:
            t = now
        if self._loss > 0.0:
            if self._ge:
                r = self.rng.random()
                if self._ge_bad:
                    if r < self._ge_p_bg:
                        self._ge_bad = False
                elif r < self._ge_p_gb:
                    self._ge_bad = True
                lost = self._ge_bad
            else:
                lost = self.rng.random() < self._loss
            if lost:
                c.lost += 1
                pc[P_LOST] += 1
                return
        due = t + self._delay
        if self._jitter > 0.0:
            if self._normal:
                j = self.rng.gauss(0.0, self._jitter)
            else:
                j = (2.0 * self.rng.random() - 1.0) * self._jitter
            due += j
            due = max(due, t)
        if self._reorder:
            if len(self._heap) >= self.MAX_INFLIGHT:
                c.overflow_drops += 1
                return
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, pkt))
        else:
            if len(self._line) >= self.MAX_INFLIGHT:
                c.overflow_drops += 1
                return
            due = max(due, self._last_due)
            self._last_due = due
            self._line.append((due, pkt))

    def next_due(self) -> float:
        if self._line:
            return self._line[0][0]
        if self._heap:
            return self._heap[0][0]
        return INF

    def pop_due(self, until: float) -> list[tuple[float, bytes]]:
        """Remove and return ``(due, pkt)`` of every packet due at or before ``until``."""
        out: list[tuple[float, bytes]] = []
        line = self._line
        while line and line[0][0] <= until:
            out.append(line.popleft())
        heap = self._heap
        while heap and heap[0][0] <= until:
            due, _, pkt = heapq.heappop(heap)
            out.append((due, pkt))
        return out

    def delivered(self, pkt: bytes) -> None:
        c = self.c
        c.delivered += 1
        c.delivered_bytes += len(pkt)
        # setdefault: a packet admitted before reset_counters() is delivered after it
        c.protos.setdefault(proto_key(pkt), [0, 0, 0, 0, 0])[P_DELIVERED] += 1

    def inflight(self) -> int:
        return len(self._line) + len(self._heap)

    def snapshot(self, now: float) -> dict[str, Any]:
        c = self.c
        bq = self._bq
        while bq and bq[0][0] <= now:
            self._bq_bytes -= bq.popleft()[1]
        qp, qb = self._qp, self._qb
        return {
            "pkts_in": c.pkts_in,
            "bytes_in": c.bytes_in,
            "delivered": c.delivered,
            "delivered_bytes": c.delivered_bytes,
            "lost": c.lost,
            "queue_drops": c.queue_drops,
            "blackout_drops": c.blackout_drops,
            "overflow_drops": c.overflow_drops,
            "write_errors": c.write_errors,
            "queued_pkts": len(bq),
            "queued_bytes": self._bq_bytes,
            "inflight": self.inflight(),
            "queue_limit_pkts": None if qp == INF else int(qp),
            "queue_limit_bytes": None if qb == INF else int(qb),
            "blackout_remaining": max(0.0, self.blackout_until - now),
            "protos": {
                proto_name(k): {
                    "in": v[P_IN],
                    "delivered": v[P_DELIVERED],
                    "lost": v[P_LOST],
                    "queue_drops": v[P_QUEUE],
                    "blackout_drops": v[P_BLACKOUT],
                }
                for k, v in sorted(c.protos.items())
            },
        }
