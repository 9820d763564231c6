"""User-facing description of the emulated link."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .model import DirectionParams


@dataclass
class LinkProfile:
    """A symmetric link (``rate_mbit_ba`` makes the rate asymmetric).

    ``rtt_ms`` is split evenly: each direction gets a one-way delay of ``rtt_ms / 2``. ``jitter_ms``
    and ``loss`` apply to each direction independently (so a round trip sees roughly twice the
    loss). ``rate_mbit`` (10^6 bit/s, counted on IP packet bytes) limits each direction;
    ``None``/0 means no limit. The bottleneck queue is drop-tail: ``queue_packets`` and/or
    ``queue_bytes``; when neither is given it holds one BDP (rate x RTT, at least 32 full packets,
    at most 1000 packets).
    """

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_mbit: float | None = None
    queue_packets: int | None = None
    queue_bytes: int | None = None
    loss_burst: float = 0.0  # mean burst length in packets (Gilbert-Elliott) when > 1
    jitter_dist: str = "uniform"
    reorder: bool = False
    rate_mbit_ba: float | None = None  # b -> a rate if different from rate_mbit
    seed: int | None = None  # RNG seed (a->b uses seed, b->a seed + 1); None: random
    mtu: int = 1500
    ipv6: bool = True

    def direction(self, which: str) -> DirectionParams:
        rate = self.rate_mbit
        if which == "b_to_a" and self.rate_mbit_ba is not None:
            rate = self.rate_mbit_ba
        p = DirectionParams(
            delay=self.rtt_ms / 2000.0,
            jitter=self.jitter_ms / 1000.0,
            jitter_dist=self.jitter_dist,
            reorder=self.reorder,
            loss=self.loss,
            loss_burst=self.loss_burst,
            rate=(rate or 0.0) * 1e6,
            queue_packets=self.queue_packets,
            queue_bytes=self.queue_bytes,
            rtt_hint=self.rtt_ms / 1000.0,
        )
        p.validate()
        return p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkProfile:
        return cls(**d)


# Friendly runtime keys (``link.set(...)``, control ``set key=value``) -> DirectionParams fields.
FRIENDLY_KEYS = {
    "rtt_ms": ("delay", lambda v: float(v) / 2000.0),
    "delay_ms": ("delay", lambda v: float(v) / 1000.0),  # one-way
    "jitter_ms": ("jitter", lambda v: float(v) / 1000.0),
    "rate_mbit": ("rate", lambda v: 0.0 if v in (None, "none", "None", "") else float(v) * 1e6),
    "loss": ("loss", float),
}
