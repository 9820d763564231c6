"""tools.qlogstat: what held a sender back, read from a synthetic aioquic qlog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

qlogstat = pytest.importorskip("tools.qlogstat")

MDS = 1200


def sent(t: float, offset: int, stream_id: int = 0) -> dict[str, Any]:
    frame = {"frame_type": "stream", "stream_id": stream_id, "offset": offset, "length": MDS}
    return {"name": "transport:packet_sent", "time": t, "data": {"frames": [frame]}}


def credit(t: float, maximum: int) -> dict[str, Any]:
    frame = {"frame_type": "max_stream_data", "stream_id": 0, "maximum": maximum}
    return {"name": "transport:packet_received", "time": t, "data": {"frames": [frame]}}


def metrics(t: float, cwnd: int, in_flight: int) -> dict[str, Any]:
    data = {"cwnd": cwnd, "bytes_in_flight": in_flight, "state": "probe_bw"}
    return {"name": "recovery:metrics_updated", "time": t, "data": data}


def write(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    params = {
        "name": "transport:parameters_set",
        "time": 0.0,
        "data": {"owner": "remote", "initial_max_data": 1 << 30,
                 "initial_max_stream_data_bidi_local": 5 * MDS},
    }
    doc = {"qlog_version": "0.3", "traces": [{"events": [params, *events]}]}
    path = tmp_path / "x.server.qlog"
    path.write_text(json.dumps(doc))
    return path


def test_time_blocked_on_credit_then_on_the_window_is_charged_to_each(tmp_path: Path) -> None:
    events = [metrics(0.0, 100 * MDS, 0)]
    events += [sent(float(i), i * MDS) for i in range(5)]  # 0..4 ms: credit (5 packets) used up
    events += [sent(0.5, 9 * MDS, stream_id=4)]  # another stream, smaller: not the download
    events += [credit(10.0, 50 * MDS)]  # 4..10 ms: flow control
    events += [sent(10.0 + i, (5 + i) * MDS) for i in range(5)]  # 10..14 ms
    events += [metrics(14.5, 10 * MDS, 10 * MDS)]  # 14.5..20: window full
    events += [metrics(20.0, 40 * MDS, 10 * MDS), sent(20.0, 10 * MDS)]
    report = qlogstat.analyse(write(tmp_path, sorted(events, key=lambda e: e["time"])))
    assert report["stream_id"] == 0 and report["stream_bytes"] == 11 * MDS
    assert report["send_span_ms"] == 20.0
    share = report["limited_share"]
    assert share["flow control"] == pytest.approx(6 / 20, abs=0.01)
    assert share["congestion window"] == pytest.approx(5.5 / 20, abs=0.01)
    assert report["window_cuts"] == 1
    assert share["pacing or application"] == pytest.approx(8.5 / 20, abs=0.01)


def test_a_trace_without_stream_data_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="sending end"):
        qlogstat.analyse(write(tmp_path, [metrics(1.0, MDS, 0)]))
