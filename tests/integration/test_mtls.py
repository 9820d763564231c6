"""Mutual TLS refusals: no usable certificate on either side means no tunnel, ever.

Each test runs a pair whose one end holds a certificate the other must refuse, checks that
``tunnel ready`` is never logged, that requests get 503 from the client end, and that the
refusing end (and the refused one) log the cause.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptproxy.ops.devcerts import CertificateAuthority, DemoPki, make_ca
from tests.support.h1client import request
from tests.support.pair import HERE, Pair

REFUSAL_WINDOW = 4.0  # connect_interval is 300 ms in the test configs: many attempts fit in it


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = make_ca(directory / "ca")
        self.other_ca = make_ca(directory / "other", name="some other CA")
        self.demo = DemoPki(
            ca=self.ca.cert_path,
            client=self.ca.issue("client.ptproxy.test", directory / "ca", stem="client"),
            server=self.ca.issue("server.ptproxy.test", directory / "ca", stem="server"),
            client_name="client.ptproxy.test",
            server_name="server.ptproxy.test",
        )
        self.dir = directory

    def issue(
        self, name: str, stem: str, *, ca: CertificateAuthority | None = None, expired: bool = False
    ):
        return (ca or self.ca).issue(name, self.dir / "extra", stem=stem, expired=expired)


@pytest.fixture(scope="module")
def mpki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield Pki(tmp_path_factory.mktemp("mtls-pki"))


def assert_no_tunnel(p: Pair) -> None:
    time.sleep(REFUSAL_WINDOW)
    assert p.client.running and p.server.running, p.logs()
    assert "tunnel ready" not in p.client_log(), p.logs()
    resp = request(p.http_port, "GET", "/bytes/10")
    assert resp.status == 503
    assert resp.header("Server") == "ptproxy client"
    # The client end keeps trying (it cannot know the problem is permanent).
    assert p.client_log().count("connecting to") >= 2, p.logs()


def assert_refused(p: Pair, *, server: str, client: str) -> None:
    """Both ends log the refusal with the TLS alert and its reason."""
    assert re.search(r"refused during handshake: TLS alert " + server, p.server_log()), p.logs()
    assert re.search(r"connecting to \S+ failed: TLS alert " + client, p.client_log()), p.logs()


def test_client_certificate_from_another_ca_is_refused(make_pair, mpki: Pki) -> None:
    cert = mpki.issue("client.ptproxy.test", "client-other-ca", ca=mpki.other_ca)
    p = make_pair(pki=mpki.demo, client_cert=cert, wait=False)
    assert_no_tunnel(p)
    why = "bad_certificate: unable to get local issuer certificate"
    assert_refused(p, server=why, client=why)


def test_client_certificate_for_the_wrong_name_is_refused(make_pair, mpki: Pki) -> None:
    cert = mpki.issue("intruder.ptproxy.test", "client-wrong-name")
    p = make_pair(pki=mpki.demo, client_cert=cert, wait=False)
    assert_no_tunnel(p)
    why = (
        r"bad_certificate: hostname 'client\.ptproxy\.test' doesn't match .*intruder\.ptproxy\.test"
    )
    assert_refused(p, server=why, client=why)


def test_expired_client_certificate_is_refused(make_pair, mpki: Pki) -> None:
    cert = mpki.issue("client.ptproxy.test", "client-expired", expired=True)
    p = make_pair(pki=mpki.demo, client_cert=cert, wait=False)
    assert_no_tunnel(p)
    assert_refused(p, server="certificate_expired", client="certificate_expired")


def test_server_certificate_for_the_wrong_name_is_refused(make_pair, mpki: Pki) -> None:
    cert = mpki.issue("wrong.ptproxy.test", "server-wrong-name")
    p = make_pair(pki=mpki.demo, server_cert=cert, wait=False)
    assert_no_tunnel(p)
    why = r"bad_certificate: hostname 'server\.ptproxy\.test' doesn't match .*wrong\.ptproxy\.test"
    assert_refused(p, server="bad_certificate", client=why)


def test_server_certificate_from_another_ca_is_refused(make_pair, mpki: Pki) -> None:
    cert = mpki.issue("server.ptproxy.test", "server-other-ca", ca=mpki.other_ca)
    p = make_pair(pki=mpki.demo, server_cert=cert, wait=False)
    assert_no_tunnel(p)
    assert_refused(
        p,
        server="bad_certificate",
        client="bad_certificate: unable to get local issuer certificate",
    )


def test_expired_server_certificate_is_refused(make_pair, mpki: Pki) -> None:
    cert = mpki.issue("server.ptproxy.test", "server-expired", expired=True)
    p = make_pair(pki=mpki.demo, server_cert=cert, wait=False)
    assert_no_tunnel(p)
    assert_refused(p, server="certificate_expired", client="certificate_expired")


def test_client_without_a_certificate_is_refused(make_pair, mpki: Pki) -> None:
    # A ptproxy client.toml cannot omit its certificate, so a stock aioquic client plays the
    # client end, against the real server process.
    p = make_pair(pki=mpki.demo, wait=False)
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "quic_client_nocert.py"),
            "--port",
            str(p.quic_port),
            "--ca",
            str(mpki.ca.cert_path),
            "--server-name",
            "server.ptproxy.test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["terminated"] is True, outcome
    assert outcome["answered"] is False, outcome
    assert outcome["error_code"] == 0x100 + 116, outcome  # TLS alert certificate_required
    assert p.wait_server_log("refused during handshake"), p.logs()
    assert "certificate_required" in p.server_log(), p.logs()
