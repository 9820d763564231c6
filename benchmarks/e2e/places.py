"""Where the processes run: loopback (everything on 127.0.0.1) or an emulated link.

On an emulated link the origin and the server end run in namespace b, the client end and the
load generator in namespace a, so every proxied byte crosses the link once each way.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "loopback": {},
    "lan": {"rtt_ms": 1.0, "loss": 0.0, "rate_mbit": 1000.0, "seed": 1},
    "wan50": {"rtt_ms": 50.0, "loss": 0.0, "rate_mbit": 100.0, "seed": 1},
    "lossy": {"rtt_ms": 50.0, "loss": 0.01, "rate_mbit": 100.0, "seed": 1},
    "sat": {"rtt_ms": 150.0, "loss": 0.005, "rate_mbit": 26.0, "seed": 1},
}
DESCRIPTIONS = {
    "loopback": "127.0.0.1, no emulation",
    "lan": "RTT 1 ms, no loss, 1 Gbit/s",
    "wan50": "RTT 50 ms, no loss, 100 Mbit/s",
    "lossy": "RTT 50 ms, 1% loss each way, 100 Mbit/s",
    "sat": "RTT 150 ms, 0.5% loss, 26 Mbit/s",
}


def emulator_available() -> tuple[bool, str]:
    try:
        from tools.netem import LinkEmulator
    except Exception as exc:  # noqa: BLE001 - any import problem means "not available"
        return False, f"tools.netem not importable: {exc}"
    ok, why = LinkEmulator.available()
    return bool(ok), str(why)


@dataclass
class Place:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    _link: Any = None

    @property
    def emulated(self) -> bool:
        return self.name != "loopback"

    def prefix(self, side: str) -> list[str]:
        return self._link.cmd_prefix(side) if self._link is not None else []

    def addr(self, side: str) -> str:
        return str(self._link.addr(side)) if self._link is not None else "127.0.0.1"

    def link_stats(self) -> dict[str, Any] | None:
        if self._link is None:
            return None
        try:
            s = self._link.stats()
        except Exception:  # noqa: BLE001
            return None
        return {d: {k: s[d].get(k) for k in ("pkts_in", "delivered", "lost", "queue_drops")}
                for d in ("a_to_b", "b_to_a") if d in s}


class PlaceContext(AbstractContextManager["Place"]):
    def __init__(self, name: str) -> None:
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
        self.place = Place(name, dict(PROFILES[name]))
        self._emu: Any = None

    def __enter__(self) -> Place:
        if self.place.emulated:
            from tools.netem import LinkEmulator, LinkProfile

            self._emu = LinkEmulator(LinkProfile(**self.place.params), prefix="ptpbench")
            self._emu.start()
            self.place._link = self._emu
        return self.place

    def __exit__(self, *exc: object) -> None:
        if self._emu is not None:
            self._emu.close()
            self.place._link = None
