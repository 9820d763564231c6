"""ptproxy/tunnel/deferred.py: aioquic's certificate-check dependencies (service_identity,
pyOpenSSL, certifi) are imported on first use only, never at start-up, and certificate checks
behave as before.

Each case runs in a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.fresh import run_fresh

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
    return run_fresh(code, tmp_path, preamble=PREAMBLE)


def test_not_imported_at_all_when_certificates_pass_imported_for_a_refused_chain(tmp_path: Path) -> None:
    """Checking a good certificate (and refusing a wrong name) needs neither service_identity nor
    pyOpenSSL; a chain cryptography's verifier refuses loads pyOpenSSL, for its verdict and reason."""
    out = run(
        """
        def kinds():
            return " ".join(type(sys.modules.get(m)).__name__ for m in ("service_identity", "OpenSSL", "OpenSSL.crypto"))
        print("start", kinds(), "attr" in sys.modules, "OpenSSL.SSL" in sys.modules)
        from ptproxy.ops.devcerts import make_ca, make_demo_pki
        pki = make_demo_pki(Path("."))
        cert = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
        cadata = pki.ca.read_bytes()
        tls.verify_certificate(certificate=cert, chain=[], cadata=cadata, server_name=pki.server_name)
        try:
            tls.verify_certificate(certificate=cert, chain=[], cadata=cadata, server_name="other.test")
        except tls.AlertBadCertificate as exc:
            print("refused", exc)
        print("checked", kinds(), "attr" in sys.modules, "OpenSSL.SSL" in sys.modules)
        other = make_ca(Path("other"), "other CA").issue(pki.server_name, Path("other"))
        try:
            tls.verify_certificate(certificate=x509.load_pem_x509_certificate(other.cert.read_bytes()),
                                   chain=[], cadata=cadata, server_name=pki.server_name)
        except tls.AlertBadCertificate as exc:
            print("refused", exc)
        print("fallback", type(sys.modules.get("OpenSSL")).__name__, "OpenSSL.SSL" in sys.modules)
        # aioquic's ``from OpenSSL import crypto`` holds the stand-in: it now reads the real module.
        print("aioquic", tls.crypto.X509Store.__module__, tls.crypto.X509StoreContextError.__name__)
        import OpenSSL.SSL
        from OpenSSL import crypto
        print("imports", OpenSSL.SSL.__name__, crypto.X509.__name__)
        """,
        tmp_path,
    )
    assert out.split("\n")[:7] == [
        "start _StandIn _StandIn _StandIn False False",
        "refused hostname 'other.test' doesn't match 'server.ptproxy.test'",
        "checked _StandIn _StandIn _StandIn False False",
        "refused unable to get local issuer certificate",
        "fallback module True",
        "aioquic OpenSSL.crypto X509StoreContextError",
        "imports OpenSSL.SSL X509",
    ], out


def test_a_full_handshake_imports_none_of_them(tmp_path: Path) -> None:
    """Both ends' checks of a mutual-TLS handshake (in memory), as a launch runs them."""
    out = run(
        """
        from ptproxy.ops.devcerts import make_demo_pki
        from tests.support.quic_pair import Pair
        from ptproxy.tunnel.aioquic import handshake_confirmed
        pki = make_demo_pki(Path("."))
        pair = Pair(pki, client_leaf=pki.client)
        pair.roundtrip()
        print(handshake_confirmed(pair.client), pair.server.tls._peer_certificate is not None)
        print(" ".join(type(sys.modules.get(m)).__name__ for m in ("service_identity", "OpenSSL", "OpenSSL.crypto")))
        """,
        tmp_path,
    )
    assert out.split("\n")[:2] == ["True True", "_StandIn _StandIn _StandIn"], out


def test_certifi_is_imported_only_if_used(tmp_path: Path) -> None:
    """aioquic.tls imports certifi for verifying without a CA of our own, which ptproxy never does.
    Run with -S (site-packages on PYTHONPATH instead): a .pth file may import certifi first."""
    spec = importlib.util.find_spec("aioquic")
    assert spec is not None and spec.origin is not None
    site_packages = os.path.dirname(os.path.dirname(spec.origin))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), site_packages]))
    script = PREAMBLE + textwrap.dedent(
        """
        print("start", type(sys.modules.get("certifi")).__name__)
        import certifi
        print("used", certifi.where().endswith(".pem"), type(sys.modules.get("certifi")).__name__)
        """
    )
    out = subprocess.run([sys.executable, "-S", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["start _StandIn", "used True module"], out.stdout
