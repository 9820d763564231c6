"""The micro suite runs, covers every request-path twin, and refuses twins that disagree.

No timing is asserted here (speed is measured in benchmarks/, never in the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# benchmarks/ is not installed with the package: the suite runs from a checkout, as a child
# process (the tests never import benchmarks).
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks" / "micro").is_dir(),
                                reason="run from a checkout: benchmarks/ is not installed")


def test_micro_suite_runs_and_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("ptproxy._speedups.framing")
    out = tmp_path / "micro.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.micro", "--repeat", "1", "--min-time", "0.001", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    names = {r["name"].split("[")[0] for r in doc["results"]}
    assert {
        "fieldcodec.h1_to_h3_fields", "fieldcodec.h3_to_h1_fields", "chunked.ChunkCoalescer",
        "chunked.last_chunk", "pump.BodyFramer.feed", "pump.FlowMarks",
    } <= names
    for r in doc["results"]:
        assert r["pure_ns"] > 0 and r["compiled_ns"] > 0 and r["floor_ns"] > 0
        assert r["path"] in ("request", "api")


def test_disagreeing_twins_are_refused() -> None:
    pytest.importorskip("ptproxy._speedups.chunked")
    script = textwrap.dedent("""
        import pytest
        from benchmarks.micro import Case, cases, run_case

        real = next(c for c in cases() if c.name.startswith("chunked.chunk[100B]"))

        def build(m):  # the compiled twin answers something else
            f = real.build(m)
            return f if m.__name__.endswith("_py") else (lambda: b"wrong")

        with pytest.raises(AssertionError, match="twins disagree"):
            run_case(Case(real.name, real.twins, build, real.floor), repeat=1, min_time=0.001)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
