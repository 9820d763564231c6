"""Operations: JSON logs end to end, SSLKEYLOGFILE and qlog traces."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ptproxy.ops.devcerts import DemoPki
from tests.support.pair import Pair, build_pair, wait_for


def fetch(pair: Pair, target: str = "/echo?ops-logs") -> int:
    req = urllib.request.Request(pair.url(target), headers={"Host": "logs.test"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return resp.status


def json_lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        doc = json.loads(line)  # every line, no exceptions
        assert {"ts", "level", "logger", "msg"} <= doc.keys(), doc
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(doc["ts"])), doc
        out.append(doc)
    return out


def test_json_logs_of_a_whole_demo_run() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    proc = subprocess.run(
        [sys.executable, "-m", "ptproxy", "--log-format", "json", "demo", "--once",
         "--http-port", "0", "--quic-port", "0"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    docs = json_lines(proc.stderr)
    msgs = [d["msg"] for d in docs]
    assert "tunnel ready" in msgs
    assert any(str(m).startswith("started endpoint at") for m in msgs)
    assert msgs.count("stopped") == 2
    assert "demo request: GET /hello -> 200" in proc.stdout


def test_json_logs_of_a_failing_client(tmp_path: Path, pki: DemoPki) -> None:
    pair = build_pair(tmp_path / "pair", pki, origin_port=9)  # no server end at all
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    log = tmp_path / "client.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ptproxy", "--log-format", "json", "-c", str(pair.client_toml)],
            stdout=subprocess.DEVNULL, stderr=f, env=env,
        )
    try:
        assert wait_for(lambda: '"error"' in log.read_text(), 20)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    docs = json_lines(log.read_text())
    errors = [d for d in docs if d["level"] == "error"]
    assert errors and "failed" in str(errors[0]["msg"]), docs
    assert docs[-1]["msg"] == "stopped"


def test_sslkeylogfile_records_secrets_and_warns(
    make_pair: Callable[..., Pair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    pair = make_pair()
    assert fetch(pair) == 200
    lines = keylog.read_text().splitlines()
    labels = {line.split()[0] for line in lines}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels, labels
    assert all(re.fullmatch(r"[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+", line) for line in lines), lines
    for log in (pair.client_log(), pair.server_log()):
        assert log.count("SSLKEYLOGFILE is set") == 1, log


def test_qlog_dir_gets_a_trace_per_connection_and_end(
    make_pair: Callable[..., Pair], tmp_path: Path
) -> None:
    # Both ends share one directory: each must keep its own trace of the same connection.
    qlogs = tmp_path / "qlog"
    system = {"system": {"qlog_dir": str(qlogs)}}
    pair = make_pair(system, system)
    assert fetch(pair) == 200
    pair.client.stop()  # the traces are written when the connection ends, at both ends

    def both_traces() -> list[Path] | None:
        files = sorted(qlogs.glob("*.qlog"))
        return files if len(files) == 2 else None

    files = wait_for(both_traces, 10)
    assert files, list(qlogs.iterdir()) if qlogs.exists() else "no qlog dir"
    by_end = {f.name.split(".")[-2]: f for f in files}
    assert set(by_end) == {"client", "server"}, files
    assert files[0].name.split(".")[0] == files[1].name.split(".")[0]  # the same connection
    for end, f in by_end.items():
        doc = json.loads(f.read_text())
        assert doc["qlog_version"] and doc["traces"][0]["vantage_point"]["type"] == end
        events = doc["traces"][0]["events"]
        assert any(e["name"] == "transport:packet_sent" for e in events)
