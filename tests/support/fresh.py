"""Run a snippet in a fresh interpreter (start-up tests: the test process has imported everything
already, so what an import does is only visible in a new one)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, cwd: Path, *, preamble: str = "", drop_env: Iterable[str] = ()) -> str:
    """Run ``preamble + dedent(code)`` with this checkout first on the path; its stdout, or the
    test fails with its stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for name in drop_env:
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(code)], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout
