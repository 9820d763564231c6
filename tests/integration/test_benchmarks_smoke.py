"""``python -m benchmarks --quick --systems direct,ptproxy``: runs end to end and writes a report
that follows the schema in benchmarks/README.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,  # ~30 s on a 2-core VM
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("nginx", "wrk", "ab")),
        reason="needs nginx, wrk and ab (apt-get install nginx wrk apache2-utils)",
    ),
]


def _summary_ok(summ: dict) -> None:
    assert set(summ) >= {"median", "min", "max", "spread_pct", "n", "values", "ratio_to_best_peer", "ratio_to_direct"}
    assert summ["min"] <= summ["median"] <= summ["max"]
    assert summ["n"] == len(summ["values"]) >= 1


def test_quick_run_writes_schema(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--systems", "direct,ptproxy",
         "--json", str(out_json), "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(out_json.read_text())
    assert rep["schema"] == "ptproxy-bench/1"
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["cpu_model"]
    assert len(rep["machine"]["loadavg_start"]) == 3
    assert set(rep["versions"]) >= {"python", "aioquic", "nginx", "caddy", "wrk"}
    assert rep["settings"]["quick"] is True and rep["settings"]["repeat"] == 1
    res = rep["results"]["loopback"]
    assert set(res) == {"direct", "ptproxy"}
    for system in ("direct", "ptproxy"):
        wrk = res[system]["wrk_small"]
        assert wrk["req_per_s"]["median"] > 0
        for summ in wrk.values():
            _summary_ok(summ)
        assert res[system]["latency_seq"]["p99_ms"]["median"] > 0
        assert res[system]["first_request"]["ms"]["median"] > 0
        assert res[system]["download_10m"]["mb_per_s"]["median"] > 0
        assert res[system]["upload_10m"]["mb_per_s"]["median"] > 0
        assert any(k.startswith("sweep_c") for k in res[system])
    # only the proxy has proxy processes, a ratio to its peers (itself here) and to direct
    pt = res["ptproxy"]
    assert pt["wrk_small"]["cpu_s_per_10k_total"]["median"] > 0
    assert pt["wrk_small"]["cpu_s_per_10k_client_end"]["median"] > 0
    assert pt["process"]["peak_rss_mib_server_end"]["median"] > 0
    assert pt["wrk_small"]["req_per_s"]["ratio_to_best_peer"] == 1.0
    assert 0 < pt["wrk_small"]["req_per_s"]["ratio_to_direct"]
    assert res["direct"]["wrk_small"]["req_per_s"]["ratio_to_best_peer"] is None
    assert "loopback" in rep["criteria_ptproxy_vs_caddy"]
    assert rep["latency_cdf_ms"]["loopback"]["ptproxy"]
    assert isinstance(rep["errors"], list) and isinstance(rep["loadavg"], list) and rep["loadavg"]
    assert not [e for e in rep["errors"] if e.get("scenario") == "*"]
    assert (tmp_path / "out" / "summary.md").read_text().startswith("Machine:")
    try:
        import matplotlib  # noqa: F401 - plots are optional (pip install matplotlib)
    except ImportError:
        return
    assert list((tmp_path / "out").glob("*.png"))


def test_requested_system_with_missing_tool_exits_2() -> None:
    # in a child process (the tests never import benchmarks), with every tool reported missing
    script = ("from benchmarks import __main__ as bench\n"
              "bench.machine.which = lambda tool: None\n"
              "raise SystemExit(bench.main(['--quick', '--systems', 'caddy']))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr


def test_help_explains_systems_and_scenarios() -> None:
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0
    for word in ("direct", "ptproxy-pure", "caddy", "wrk_small", "latency_seq", "--quick", "--repeat", "--profile"):
        assert word in r.stdout
