"""The command line and the configuration file, as a user meets them."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ptproxy.ops.devcerts import make_demo_pki
from tests.support.h1client import request
from tests.support.pair import Pair, free_port, ptproxy_cmd, subprocess_env, wait_for
from tools.origin_server import pattern_bytes

DATA = Path(__file__).resolve().parent.parent / "unit" / "data"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ptproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        env=subprocess_env(),
    )


def rust_pair_files(directory: Path, origin_port: int) -> tuple[Path, Path, int, int]:
    """The Rust project's example client.toml/server.toml with only addresses adapted.

    Certificates are written under the names the examples use (ca.crt, client.crt, ...) for the
    names they use (server.example.com, client.example.com), next to the files, so the relative
    paths resolve as they would for a Rust user. Changed: the HTTP ports, the origin port, a free
    QUIC port (both ends), and connect_address (server.example.com does not resolve here).
    """
    pki = make_demo_pki(
        directory, client_name="client.example.com", server_name="server.example.com"
    )
    pki.ca.rename(directory / "ca.crt")
    http_port = free_port(socket.SOCK_STREAM)
    quic_port = free_port(socket.SOCK_DGRAM)
    client = (DATA / "rust_client.toml").read_text()
    server = (DATA / "rust_server.toml").read_text()
    assert "127.0.0.1:20080" in client and "localhost:8080" in server
    client = client.replace("127.0.0.1:20080", f"127.0.0.1:{http_port}")
    client = client.replace(
        "[general]\n", f'[general]\nquic_port = {quic_port}\nconnect_address = "127.0.0.1"\n', 1
    )
    server = server.replace("localhost:8080", f"localhost:{origin_port}")
    server = server.replace("[general]\n", f"[general]\nquic_port = {quic_port}\n", 1)
    (directory / "client.toml").write_text(client)
    (directory / "server.toml").write_text(server)
    return directory / "client.toml", directory / "server.toml", http_port, quic_port


def test_rust_format_config_pair_runs_unchanged(tmp_path: Path, origin) -> None:
    confdir = tmp_path / "etc"
    confdir.mkdir()
    client_toml, server_toml, http_port, quic_port = rust_pair_files(confdir, origin.port)
    pair = Pair(tmp_path, client_toml, server_toml, http_port, quic_port)
    try:
        pair.start_server()
        pair.start_client()
        # Defaults of the example: the server end binds [::] (dual stack), the client end
        # connects from [::] to an IPv4 address.
        assert re.search(rf"started endpoint at \[::\]:{quic_port}", pair.server_log()), pair.logs()
        assert re.search(
            rf"connection \d+ established \(127\.0\.0\.1:{quic_port}\)", pair.client_log()
        )
        # The server end logs its side once the client's Finished arrives, which may be after
        # the client end reported ready: wait for it rather than read the log once.
        assert wait_for(
            lambda: re.search(
                r"connection \d+ established \(127\.0\.0\.1:\d+\)", pair.server_log()
            ),
            10,
        ), pair.logs()
        resp = request(http_port, "GET", "/bytes/1000", headers={"Host": "api.internal"})
        assert resp.status == 200
        assert resp.body == pattern_bytes(1000)
        assert pair.stop() == (0, 0)
    finally:
        problems = pair.teardown()
    assert not problems, problems


@pytest.mark.parametrize("name", ["rust_client.toml", "rust_server.toml"])
def test_check_prints_ok_for_a_valid_config(tmp_path: Path, name: str) -> None:
    client_toml, server_toml, _, _ = rust_pair_files(tmp_path, 8080)
    path = client_toml if name == "rust_client.toml" else server_toml
    result = run_cli("--check", "-c", str(path), cwd=tmp_path.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


BROKEN = [
    # (what to change, text that must appear in the error line)
    (
        lambda s: s.replace("[transport]\n", "[transport]\ninitial_windw = 10\n"),
        "transport.initial_windw",
    ),
    (lambda s: s.replace('"Bbr"', '"Vegas"'), "transport.congestion_algorithm"),
    (
        lambda s: s.replace("connect_interval = 1000", "connect_interval = -5"),
        "system.connect_interval",
    ),
    (lambda s: s.replace('cert = "client.crt"\n', ""), "tls.cert"),
    (lambda s: s.replace('mode = "Client"', 'mode = "Server"'), "general.http_connect_address"),
    (
        lambda s: s.replace(
            'mode = "Client"', 'mode = "Server"\nhttp_connect_address = "127.0.0.1:1"'
        ),
        "general.http_bind_address",
    ),
    (lambda s: s.replace('key = "client.key"', 'key = "missing.key"'), "missing.key"),
    (lambda s: s.replace('key = "client.key"', 'key = "server.key"'), "client.crt"),
    (
        lambda s: s + '\n[[routes]]\nname = "api"\nhosts = ["a.test"]\n[[routes]]\nname = "api"\nhosts = ["b.test"]\n',
        "routes[1].name: 'api' is also routes[0]",
    ),
    (lambda s: s + '\n[[routes]]\nname = "Api"\nhosts = ["a.test"]\n', "routes[0].name"),
    (lambda s: s + '\n[[routes]]\nname = "api"\nhosts = ["a..test"]\n', "routes[0].hosts"),
    (
        lambda s: s + '\n[[routes]]\nname = "api"\nhosts = ["a.test"]\norigins = ["127.0.0.1:1"]\n',
        "routes[0].origins: not allowed in Client mode",
    ),
    (
        lambda s: s.replace('mode = "Client"', 'mode = "Server"\nhttp_connect_address = "127.0.0.1:1"')
        .replace("http_bind_address", "#")
        + '\n[[routes]]\nname = "api"\norigins = []\n',
        "routes[0].origins: an empty pool",
    ),
    (
        lambda s: s.replace('mode = "Client"', 'mode = "Server"\nhttp_connect_address = "127.0.0.1:1"')
        .replace("http_bind_address", "#")
        + '\n[[routes]]\nname = "api"\norigins = ["127.0.0.1:2"]\n[[routes.paths]]\nprefix = "v2"\n',
        "routes[0].paths[0].prefix",
    ),
]


@pytest.mark.parametrize(
    "mutate,field",
    BROKEN,
    ids=[
        "unknown-field",
        "bad-enum",
        "negative-interval",
        "missing-cert",
        "server-without-origin",
        "server-with-bind",
        "missing-key-file",
        "key-of-another-cert",
        "duplicate-route",
        "bad-route-name",
        "bad-route-host",
        "server-field-in-client-route",
        "empty-pool",
        "bad-path-prefix",
    ],
)
def test_check_rejects_a_broken_config_with_one_line_naming_the_field(
    tmp_path: Path, mutate, field: str
) -> None:
    client_toml, _, _, _ = rust_pair_files(tmp_path, 8080)
    client_toml.write_text(mutate(client_toml.read_text()))
    result = run_cli("--check", "-c", str(client_toml))
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert field in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_running_with_a_broken_config_exits_1_with_one_line(tmp_path: Path) -> None:
    client_toml, _, _, _ = rust_pair_files(tmp_path, 8080)
    client_toml.write_text(client_toml.read_text().replace('"Bbr"', '"Vegas"'))
    result = subprocess.run(
        ptproxy_cmd(client_toml),
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "transport.congestion_algorithm" in lines[0], result.stderr


def test_missing_config_file_exits_1_naming_it(tmp_path: Path) -> None:
    result = run_cli("--check", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 1
    assert str(tmp_path / "nope.toml") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_version_mentions_speedups() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert re.match(r"ptproxy \d+\.\d+", result.stdout)
    assert re.search(r"speedups: (compiled|pure|mixed)", result.stdout), result.stdout
