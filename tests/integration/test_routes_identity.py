"""Identity headers at a hub: one server end, two client ends with two client certificates.

The server end accepts both names (``peer_hostname`` is a list) and adds ``request_headers`` to
every origin request; the test origin's ``/echo`` returns what it received, compared here with the
client certificate as ``cryptography`` parses it. A forged ``X-SSL-*`` from the HTTP/1.1 client is
replaced, and after a restart of the server end (``ticket_key_file``) the resumed sessions, which
carry no certificate, still yield the same values (the identity is sealed in the session ticket).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from ptproxy.ops.devcerts import DemoPki, LeafFiles, make_ca
from tests.support.h1client import Response, request
from tests.support.pair import Pair, wait_for

NAMES = ("branch-a.ptproxy.test", "branch-b.ptproxy.test")
SSL = ["X-SSL-Subject", "X-SSL-Issuer", "X-SSL-Serial", "X-SSL-Notbefore", "X-SSL-Notafter", "X-SSL-Cipher"]
HEADERS = ["X-Forwarded-For", "X-Forwarded-Proto", *SSL]
TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
READY = 60.0  # loaded 2-core CI: generous
SERVER = {
    "general": {"peer_hostname": list(NAMES)},
    "system": {"request_headers": HEADERS},
    "tls": {"ticket_key_file": "tickets.json"},
    "transport": {"max_idle_timeout": 30000, "keep_alive_interval": 1000},
}
CLIENT = {"transport": {"max_idle_timeout": 30000, "keep_alive_interval": 1000}}


class HubPki:
    def __init__(self, directory: Path) -> None:
        ca = make_ca(directory)
        self.a = ca.issue(NAMES[0], directory, stem="branch-a")
        self.b = ca.issue(NAMES[1], directory, stem="branch-b")
        self.demo = DemoPki(
            ca=ca.cert_path,
            client=self.a,
            server=ca.issue("server.ptproxy.test", directory, stem="server"),
            client_name=NAMES[0],
            server_name="server.ptproxy.test",
        )


@pytest.fixture(scope="module")
def hpki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubPki]:
    yield HubPki(tmp_path_factory.mktemp("hub-pki"))


def expected(leaf: LeafFiles) -> dict[str, str]:
    """The X-SSL-* values (but the cipher) of a client certificate file, as cryptography reads it."""
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    return {
        "x-ssl-subject": cert.subject.rfc4514_string(),
        "x-ssl-issuer": cert.issuer.rfc4514_string(),
        "x-ssl-serial": format(cert.serial_number, "X"),
        "x-ssl-notbefore": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-ssl-notafter": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def echo(pair: Pair, headers: list[tuple[str, str]] | None = None) -> tuple[Response, dict[str, list[str]]]:
    resp = request(pair.http_port, "GET", "/echo", headers=headers, timeout=30)
    assert resp.status == 200, (resp.status, resp.body[:500], pair.logs())
    seen: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return resp, seen


def ssl_values(seen: dict[str, list[str]]) -> dict[str, str]:
    """The X-SSL-* the origin received: each exactly once."""
    out = {}
    for name in SSL:
        values = seen.get(name.lower(), [])
        assert len(values) == 1, (name, seen)
        out[name.lower()] = values[0]
    return out


def hub(make_pair: Callable[..., Pair], hpki: HubPki) -> tuple[Pair, Pair]:
    """The hub (server end and branch A's client end) and branch B's client end dialing it."""
    a = make_pair(CLIENT, SERVER, pki=hpki.demo, client_cert=hpki.a, wait=False)
    a.wait_server_endpoint(READY)
    a.wait_ready(timeout=READY)
    b = make_pair(
        {**CLIENT, "general": {"quic_port": a.quic_port}},
        pki=hpki.demo,
        client_cert=hpki.b,
        start_server=False,
        wait=False,
    )
    b.wait_ready(timeout=READY)
    return a, b


def check_identity(pair: Pair, leaf: LeafFiles, seen: dict[str, list[str]]) -> str:
    got = ssl_values(seen)
    cipher = got.pop("x-ssl-cipher")
    assert cipher in TLS13
    assert got == expected(leaf)
    return cipher


def test_two_branches_at_once_each_with_its_certificate(make_pair: Callable[..., Pair], hpki: HubPki) -> None:
    a, b = hub(make_pair, hpki)
    # Both sessions are up at the same time on the one server end.
    assert a.wait_server_log("established", count=2), a.logs()
    _, seen_a = echo(a)
    _, seen_b = echo(b)
    check_identity(a, hpki.a, seen_a)
    check_identity(b, hpki.b, seen_b)
    assert seen_a["x-ssl-subject"] == [f"CN={NAMES[0]}"]
    assert seen_b["x-ssl-subject"] == [f"CN={NAMES[1]}"]
    assert seen_a["x-forwarded-proto"] == ["http"] and seen_b["x-forwarded-proto"] == ["http"]
    # Interleaved again: nothing of one session leaks into the other.
    for _ in range(3):
        assert ssl_values(echo(b)[1])["x-ssl-serial"] == expected(hpki.b)["x-ssl-serial"]
        assert ssl_values(echo(a)[1])["x-ssl-serial"] == expected(hpki.a)["x-ssl-serial"]


def test_forged_identity_headers_are_replaced(make_pair: Callable[..., Pair], hpki: HubPki) -> None:
    a, b = hub(make_pair, hpki)
    forged = [
        ("X-SSL-Subject", f"CN={NAMES[1]}"),
        ("x-ssl-serial", "00"),
        ("X-SSL-Cipher", "NULL"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Unrelated", "kept"),
    ]
    _, seen = echo(a, forged)
    check_identity(a, hpki.a, seen)
    assert seen["x-forwarded-proto"] == ["http"]
    assert "203.0.113.9" not in seen.get("x-forwarded-for", [])
    assert seen["x-unrelated"] == ["kept"]


def test_forwarded_for_is_the_address_the_client_end_saw(make_pair: Callable[..., Pair], hpki: HubPki) -> None:
    a, _ = hub(make_pair, hpki)
    _, seen = echo(a, [("X-Forwarded-For", "203.0.113.9")])
    assert seen.get("x-forwarded-for") == ["127.0.0.1"], seen


def test_resumed_sessions_after_a_restart_keep_their_identity(make_pair: Callable[..., Pair], hpki: HubPki) -> None:
    a, b = hub(make_pair, hpki)
    before_a = ssl_values(echo(a)[1])
    before_b = ssl_values(echo(b)[1])
    assert a.server.proc is not None
    a.server.proc.send_signal(signal.SIGKILL)  # no CONNECTION_CLOSE: the clients learn by reset
    a.server.wait(10)
    a.restart_server()  # same port, same ticket key file
    restarted = time.monotonic()
    a.wait_ready(count=2, timeout=READY)
    b.wait_ready(count=2, timeout=max(5.0, READY - (time.monotonic() - restarted)))
    # The new process opened the sealed tickets of the old one: both sessions resumed.
    assert wait_for(lambda: a.server.current_log().count("(resumed)") >= 2, 30), a.logs()
    after_a = ssl_values(echo(a)[1])
    after_b = ssl_values(echo(b)[1])
    assert after_a == before_a and after_a["x-ssl-subject"] == f"CN={NAMES[0]}"
    assert after_b == before_b and after_b["x-ssl-subject"] == f"CN={NAMES[1]}"
