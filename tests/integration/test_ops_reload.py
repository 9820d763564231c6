"""Operations: SIGHUP re-reads certificate, key and CA; live sessions stay up.

The new material applies from the next handshake on; a reload that cannot read the files keeps
the previous material and logs one error line.
"""

from __future__ import annotations

import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ptproxy.ops.devcerts import DemoPki, make_ca
from tests.support.pair import Pair, wait_for


def fetch(pair: Pair, target: str = "/echo?reload") -> int:
    req = urllib.request.Request(pair.url(target), headers={"Host": "reload.test"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def error_lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def test_server_reload_rotates_to_an_untrusted_ca(make_pair: Callable[..., Pair], pki: DemoPki, tmp_path: Path) -> None:
    pair = make_pair()
    assert fetch(pair) == 200
    # A new CA the client does not trust issues the server a certificate for the same name.
    other = make_ca(tmp_path / "other-ca", name="rotated CA")
    leaf = other.issue(pki.server_name, tmp_path / "other-ca", stem="server")
    shutil.copy(leaf.cert, pair.dir / "certs" / "server.crt")
    shutil.copy(leaf.key, pair.dir / "certs" / "server.key")
    pair.server.send(signal.SIGHUP)
    assert pair.wait_server_log("reloaded TLS material"), pair.logs()

    # The live session is untouched and keeps serving.
    for _ in range(3):
        assert fetch(pair) == 200
    assert pair.server.running and pair.client.running

    # A fresh client (no session ticket) must now refuse the server's new certificate.
    pair.client.stop()
    pair.client.start()
    assert pair.wait_client_log("failed", timeout=15), pair.logs()
    assert wait_for(lambda: "certificate" in pair.client.current_log().lower(), 10), pair.logs()
    assert "tunnel ready" not in pair.client.current_log()
    assert fetch(pair) == 503


def test_client_reload_applies_to_the_next_dial_and_drops_its_ticket(
    make_pair: Callable[..., Pair], tmp_path: Path
) -> None:
    pair = make_pair()
    assert fetch(pair) == 200
    # The client now trusts only an unrelated CA; it holds a resumption ticket from the server,
    # which must not let the next connection skip verification.
    other = make_ca(tmp_path / "other-ca", name="unrelated CA")
    shutil.copy(other.cert_path, pair.dir / "certs" / "client-ca.crt")
    pair.client.send(signal.SIGHUP)
    assert pair.wait_client_log("reloaded TLS material"), pair.logs()
    assert fetch(pair) == 200  # live session unaffected

    pair.restart_server()  # the session drops; the client redials with the new CA
    assert pair.wait_client_log("lost", timeout=15) or pair.wait_client_log("failed", timeout=15), pair.logs()
    assert wait_for(lambda: "certificate" in pair.client_log().split("reloaded TLS material", 1)[1].lower(), 15), pair.logs()
    assert pair.client_log().count("tunnel ready") == 1
    assert fetch(pair) == 503


def test_broken_reload_keeps_the_old_material(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair()
    (pair.dir / "certs" / "server.key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n")
    pair.server.send(signal.SIGHUP)
    assert pair.wait_server_log("reload failed"), pair.logs()
    lines = error_lines(pair.server_log(), "reload failed")
    assert len(lines) == 1 and "ERROR" in lines[0] and "server.key" in lines[0], lines
    assert fetch(pair) == 200
    # A new connection still gets the previous (good) certificate and key.
    pair.client.stop()
    pair.client.start()
    pair.wait_ready(count=2)
    assert fetch(pair) == 200

    # A missing file: same, one line naming it.
    (pair.dir / "certs" / "server.crt").unlink()
    pair.server.send(signal.SIGHUP)
    assert pair.wait_server_log("reload failed", count=2), pair.logs()
    assert "server.crt" in error_lines(pair.server_log(), "reload failed")[-1]
    assert fetch(pair) == 200 and pair.server.running
