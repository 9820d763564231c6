"""What the callgrind micro benchmarks (``packets_ir``, ``h3path_ir``) share: one child measurement
run under ``valgrind --tool=callgrind``, and the per-unit cost of two of them (set-up cancels)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["child_instructions", "marginal_of"]


def child_instructions(module: str, child_args: list[str], env: dict[str, str] | None = None) -> tuple[int, int]:
    """(instructions, count) of ``python -m <module> --child <child_args>`` under callgrind: what
    callgrind collected, and the count the child printed on its last line. ``env``: the child's
    environment (default: this one)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, "-m", module, "--child", *child_args,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(run.stderr[-2000:])
    return int(found.group(1)), int(run.stdout.strip().splitlines()[-1])


def marginal_of(measure: Callable[[int], tuple[int, int]], small: int, large: int) -> float:
    """Instructions per counted unit between a ``small`` and a ``large`` run of ``measure`` (which
    returns (instructions, count)): whatever a run costs regardless of its size cancels."""
    ir_s, n_s = measure(small)
    ir_l, n_l = measure(large)
    return (ir_l - ir_s) / max(n_l - n_s, 1)
