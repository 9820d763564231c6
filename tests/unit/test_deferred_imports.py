"""ptproxy/tunnel/deferred.py: aioquic's certificate-check dependency is imported on first use or in
the background, never at start-up, and certificate checks behave exactly as before.

Each case runs in a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PREAMBLE = """
import sys, time
from pathlib import Path
import ptproxy.tunnel
from ptproxy.tunnel import deferred
from aioquic import tls
from cryptography import x509
"""


def run(code: str, tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    script = PREAMBLE + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_not_imported_at_start_up_then_checks_certificates_on_first_use(tmp_path: Path) -> None:
    out = run(
        """
        print("stand-in", type(sys.modules.get("service_identity")).__name__, "attr" in sys.modules)
        from ptproxy.ops.devcerts import make_demo_pki
        pki = make_demo_pki(Path("."))
        cert = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
        cadata = pki.ca.read_bytes()
        tls.verify_certificate(certificate=cert, chain=[], cadata=cadata, server_name=pki.server_name)
        print("real", type(sys.modules.get("service_identity")).__name__)
        try:
            tls.verify_certificate(certificate=cert, chain=[], cadata=cadata, server_name="other.test")
        except tls.AlertBadCertificate as exc:
            print("refused", exc)
        """,
        tmp_path,
    )
    assert "stand-in _StandIn False" in out
    assert "real module" in out
    assert "refused hostname 'other.test' doesn't match" in out, out


def test_warm_in_background_imports_it(tmp_path: Path) -> None:
    out = run(
        """
        deferred.warm_deferred_imports()
        deadline = time.monotonic() + 60
        # (absent from sys.modules while the real import runs)
        while type(sys.modules.get("service_identity")).__name__ != "module" and time.monotonic() < deadline:
            time.sleep(0.01)
        print(type(sys.modules.get("service_identity")).__name__, tls.service_identity.VerificationError.__module__)
        """,
        tmp_path,
    )
    assert out.split() == ["module", "service_identity.exceptions"]


def test_certifi_is_imported_only_if_used_never_warmed(tmp_path: Path) -> None:
    """aioquic.tls imports certifi for verifying without a CA of our own, which ptproxy never does.
    Run with -S (site-packages on PYTHONPATH instead): a .pth file may import certifi first."""
    spec = importlib.util.find_spec("aioquic")
    assert spec is not None and spec.origin is not None
    site_packages = os.path.dirname(os.path.dirname(spec.origin))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), site_packages]))
    script = PREAMBLE + textwrap.dedent(
        """
        print("start", type(sys.modules.get("certifi")).__name__)
        deferred.warm()
        print("warmed", type(sys.modules.get("certifi")).__name__)
        import certifi
        print("used", certifi.where().endswith(".pem"), type(sys.modules.get("certifi")).__name__)
        """
    )
    out = subprocess.run([sys.executable, "-S", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["start _StandIn", "warmed _StandIn", "used True module"], out.stdout
