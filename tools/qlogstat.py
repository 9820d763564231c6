"""What held a bulk sender back? Reads the sending end's qlog (aioquic JSON) of one download.

    python -m tools.qlogstat QLOG_FILE [--stream ID]

aioquic never sends DATA_BLOCKED frames, so blocking is inferred from the trace itself. Between
the first and the last new data of the stream, every stretch of time is charged to what bounded
the sender when it began (``limited_share``):

* ``flow control``: the peer's MAX_STREAM_DATA / MAX_DATA credit had no room for another full
  packet beyond the highest offset sent;
* ``congestion window``: the controller's window had no room for another full packet;
* ``pacing or application``: neither (the pacer's next slot, or no data from the origin yet).

Also: window cuts (cwnd falling by more than a fifth: a loss-recovery entry), losses,
retransmitted bytes and the controller states seen (BBR logs ``state``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MDS = 1200  # bytes: a full packet, the room a sender needs to go on


@dataclass
class SenderTrace:
    """The sender's view, replayed event by event."""

    stream_id: int
    stream_credit: int = 0
    conn_credit: int = 0
    highest: int = 0
    cwnd: int = 0
    in_flight: int = 0
    first_ms: float | None = None
    last_ms: float = 0.0
    retransmitted: int = 0
    lost_packets: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    window_cuts: int = 0
    _clock: float | None = None

    def limit(self) -> str:
        credit = min(self.stream_credit or 1 << 62, self.conn_credit or 1 << 62)
        if self.highest + MDS > credit:
            return "flow control"
        if self.cwnd and self.in_flight + MDS > self.cwnd:
            return "congestion window"
        return "pacing or application"

    def on_event(self, ev: dict[str, Any]) -> None:
        name, data, t = ev["name"], ev.get("data", {}), float(ev["time"])
        if self._clock is not None:
            self.timeline.append((self._clock, self.limit()))
            self._clock = t
        if name == "recovery:metrics_updated":
            cwnd = data.get("cwnd", self.cwnd)
            if self.first_ms is not None and cwnd < 0.8 * self.cwnd:
                self.window_cuts += 1
            self.cwnd = cwnd
            self.in_flight = data.get("bytes_in_flight", self.in_flight)
            if "state" in data:
                self.states[data["state"]] += 1
        elif name == "recovery:packet_lost":
            self.lost_packets += 1
        elif name == "transport:packet_received":
            for fr in data.get("frames", []):
                if fr.get("frame_type") == "max_stream_data" and fr.get("stream_id") == self.stream_id:
                    self.stream_credit = max(self.stream_credit, fr["maximum"])
                elif fr.get("frame_type") == "max_data":
                    self.conn_credit = max(self.conn_credit, fr["maximum"])
        elif name == "transport:packet_sent":
            self._on_sent(data, t)

    def _on_sent(self, data: dict[str, Any], t: float) -> None:
        for fr in data.get("frames", []):
            if fr.get("frame_type") != "stream" or fr.get("stream_id") != self.stream_id:
                continue
            end = fr["offset"] + fr["length"]
            if end <= self.highest:
                self.retransmitted += fr["length"]
                continue
            if self.first_ms is None:
                self.first_ms = self._clock = t
            self.highest, self.last_ms = end, t


def biggest_stream(events: list[dict[str, Any]]) -> int:
    """The stream that carried the most data in this end's sent packets: the download."""
    sent: Counter[int] = Counter()
    for ev in events:
        if ev["name"] == "transport:packet_sent":
            for fr in ev["data"].get("frames", []):
                if fr.get("frame_type") == "stream":
                    sent[fr["stream_id"]] += fr["length"]
    if not sent:
        raise SystemExit("no STREAM frames sent in this trace: pass the sending end's qlog")
    return sent.most_common(1)[0][0]


def analyse(path: Path, stream_id: int | None = None) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    events = [ev for tr in doc["traces"] for ev in tr["events"]]
    if stream_id is None:
        stream_id = biggest_stream(events)
    # Credit frames come from the peer before the data they allow: seed them with the
    # transport parameters' initial limits, when logged.
    tr = SenderTrace(stream_id)
    for ev in events:
        if ev["name"] == "transport:parameters_set" and ev["data"].get("owner") == "remote":
            d = ev["data"]
            tr.conn_credit = d.get("initial_max_data", 0)
            tr.stream_credit = d.get("initial_max_stream_data_bidi_local", 0)
        tr.on_event(ev)
        if tr.highest and tr.last_ms and ev["name"] == "transport:packet_sent" and tr.last_ms < float(ev["time"]) - 1e3:
            break  # a second after the download's last new data: the rest is other traffic
    span = (tr.last_ms - tr.first_ms) if tr.first_ms is not None else 0.0
    limited: Counter[str] = Counter()
    for (t0, why), (t1, _) in zip(tr.timeline, tr.timeline[1:] + [(tr.last_ms, "")]):
        if t0 < tr.last_ms:
            limited[why] += min(t1, tr.last_ms) - t0
    return {
        "file": str(path),
        "stream_id": stream_id,
        "stream_bytes": tr.highest,
        "send_span_ms": round(span, 1),
        "goodput_mbit": round(tr.highest * 8 / 1e3 / span, 1) if span else None,
        "limited_share": {k: round(v / span, 3) for k, v in limited.most_common()} if span else {},
        "window_cuts": tr.window_cuts,
        "lost_packets": tr.lost_packets,
        "retransmitted_bytes": tr.retransmitted,
        "controller_states": dict(tr.states),
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.qlogstat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("qlog", type=Path, nargs="+")
    ap.add_argument("--stream", type=int, default=None,
                    help="stream id of the download (default: the stream that sent the most)")
    a = ap.parse_args()
    for p in a.qlog:
        print(json.dumps(analyse(p, a.stream), indent=1))


if __name__ == "__main__":
    main()
