"""ptproxy.sockets (listening sockets bound or inherited) and the ``unix:`` addresses of the config.

Socket activation end to end (fds from 3, LISTEN_PID) is in
tests/integration/test_socket_activation.py: a test process cannot hand itself fds 3, 4, ...
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptproxy import sockets
from ptproxy.addr import format_address
from ptproxy.ops.config import ConfigError, parse
from ptproxy.sockets import ListenerError, listener_socket

FIELD = "[general] http_bind_address"


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    yield
    for sock in sockets.inherited.values():
        sock.close()
    sockets.inherited.clear()
    sockets.disown_socket_files()


def _unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    return sock


# -- TCP -------------------------------------------------------------------------------------------


def test_tcp_listener_is_bound_and_listening() -> None:
    sock = listener_socket("http", ("127.0.0.1", 0), field=FIELD)
    with sock, socket.create_connection(sock.getsockname(), timeout=2):
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert not sock.get_inheritable()


def test_tcp_port_in_use_names_the_field() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ListenerError, match=rf"^routes\[0\]\.tcp_bind_address: cannot listen at 127\.0\.0\.1:{port}: "):
            listener_socket("pg", ("127.0.0.1", port), field="routes[0].tcp_bind_address")


# -- UNIX ------------------------------------------------------------------------------------------


def test_unix_listener_mode_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    sock = listener_socket("http", (f"unix:{path}", 0), field=FIELD, unix_mode=0o660)
    with sock:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert format_address(sock.getsockname()) == f"unix:{path}"
    sockets.remove_socket_files()
    assert not path.exists()


def test_stale_unix_socket_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "app.sock"
    _unix_listener(path).close()  # the file stays, nobody accepts: what a crash leaves
    caplog.set_level(logging.INFO, "ptproxy.sockets")
    with listener_socket("http", (f"unix:{path}", 0), field=FIELD) as sock:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # the new socket accepts
        assert sock.getsockname() == str(path)
    assert "removing the stale socket file" in caplog.text


def test_live_unix_socket_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with _unix_listener(path):
        with pytest.raises(ListenerError, match=rf"^\[general\] http_bind_address: unix:{path}: another process is listening"):
            listener_socket("http", (f"unix:{path}", 0), field=FIELD)
        assert path.exists()


def test_a_file_that_is_not_a_socket_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("keep me")
    with pytest.raises(ListenerError, match=r"the path exists and is not a socket"):
        listener_socket("http", (f"unix:{path}", 0), field=FIELD)
    assert path.read_text() == "keep me"


def test_a_socket_file_replaced_by_another_process_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    listener_socket("http", (f"unix:{path}", 0), field=FIELD).close()
    path.unlink()
    with _unix_listener(path):  # a successor's socket at the same path: not ours to remove
        sockets.remove_socket_files()
        assert path.exists()


# -- inherited sockets ------------------------------------------------------------------------------


def test_an_adopted_socket_is_used_instead_of_binding(tmp_path: Path) -> None:
    passed = socket.create_server(("127.0.0.1", 0))
    sockets.adopt("api", passed)
    # The config's address is not bound: the passed socket wins.
    sock = listener_socket("api", (f"unix:{tmp_path / 'never.sock'}", 0), field="routes[0].http_bind_address")
    assert sock is passed and not sock.get_inheritable()
    assert not (tmp_path / "never.sock").exists()
    assert "api" not in sockets.inherited
    sock.close()


def test_a_passed_socket_of_the_wrong_kind_is_an_error() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    sockets.adopt("http", udp)
    with pytest.raises(ListenerError, match=r"^socket 'http' was passed as a UDP socket at 127\.0\.0\.1:\d+; it must be a TCP or UNIX stream"):
        listener_socket("http", ("127.0.0.1", 0), field=FIELD)
    tcp = socket.create_server(("127.0.0.1", 0))
    sockets.adopt("quic", tcp)
    with pytest.raises(ListenerError, match=r"^socket 'quic' .* must be a UDP socket"):
        sockets.inherited_socket("quic", "datagram")


def test_a_passed_stream_socket_must_listen() -> None:
    sockets.adopt("http", socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    with pytest.raises(ListenerError, match=r"not listening \(a \.socket unit needs Accept=no\)"):
        listener_socket("http", ("127.0.0.1", 0), field=FIELD)


def test_two_sockets_of_one_name_are_an_error() -> None:
    sockets.adopt("http", socket.create_server(("127.0.0.1", 0)))
    with socket.create_server(("127.0.0.1", 0)) as second, pytest.raises(ListenerError, match="two sockets passed as 'http'"):
        sockets.adopt("http", second)


def test_unclaimed_sockets_are_closed_with_one_warning_each(caplog: pytest.LogCaptureFixture) -> None:
    stray = socket.create_server(("127.0.0.1", 0))
    sockets.adopt("typo", stray)
    assert sockets.close_unclaimed() == ["typo"]
    assert stray.fileno() == -1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'typo'" in warnings[0] and "no listener" in warnings[0]


def test_environment_without_listen_fds_is_left_alone() -> None:
    env = {"PATH": "/bin"}
    assert sockets.read_environment(env) == []
    assert env == {"PATH": "/bin"}


def test_listen_fds_for_another_process_are_ignored_and_unset(caplog: pytest.LogCaptureFixture) -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:quic"}
    assert sockets.read_environment(env) == []
    assert env == {} and sockets.inherited == {}
    assert "not this one" in caplog.text


def test_a_bad_listen_fds_is_an_error() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"}
    with pytest.raises(ListenerError, match="LISTEN_FDS: expected a number"):
        sockets.read_environment(env)
    assert env == {}


# -- config ----------------------------------------------------------------------------------------

CLIENT = """
[general]
mode = "Client"
peer_hostname = "server.example.com"
http_bind_address = "unix:run/http.sock"
[tls]
cert = "c.crt"
key = "c.key"
[system]
unix_socket_mode = "0660"
[[routes]]
name = "api"
http_bind_address = "unix:/run/ptproxy/api.sock"
"""

SERVER = """
[general]
mode = "Server"
peer_hostname = "client.example.com"
http_connect_address = ["unix:app.sock", "127.0.0.1:8080"]
[tls]
cert = "s.crt"
key = "s.key"
[[routes]]
name = "api"
origins = ["unix:/run/api.sock"]
[[routes.paths]]
prefix = "/v2"
origins = ["unix:v2.sock"]
"""
FILE = Path("/etc/ptproxy/test.toml")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, path=FILE)
    return str(info.value).removeprefix(f"{FILE}: ")


def test_unix_listeners_resolve_against_the_config_directory() -> None:
    config = parse(CLIENT, path=FILE)
    assert config.general.http_bind == ("unix:/etc/ptproxy/run/http.sock", 0)
    assert config.routes[0].http_bind_address == "unix:/run/ptproxy/api.sock"
    assert config.system.unix_mode == 0o660


def test_unix_origins_resolve_against_the_config_directory() -> None:
    config = parse(SERVER, path=FILE)
    assert config.general.http_connects == [("unix:/etc/ptproxy/app.sock", 0), ("127.0.0.1", 8080)]
    assert config.routes[0].origins == ["unix:/run/api.sock"]
    assert config.routes[0].paths is not None and config.routes[0].paths[0].origins == ["unix:/etc/ptproxy/v2.sock"]


def test_unix_address_errors_name_the_field() -> None:
    long = "unix:/" + "x" * 120
    assert _error(SERVER.replace('"unix:/run/api.sock"', f'"{long}"')).startswith(
        "routes[0].origins: unix:/xxx"
    )
    assert "a UNIX socket path may have at most 107" in _error(SERVER.replace('"unix:/run/api.sock"', f'"{long}"'))
    assert _error(SERVER.replace('"unix:/run/api.sock"', '"unix:"')) == (
        "routes[0].origins: expected a path after 'unix:', got 'unix:'"
    )
    assert _error(CLIENT + '[metrics]\nbind_address = "unix:/run/m.sock"\n').startswith(
        "metrics.bind_address: a UNIX socket is not supported here"
    )
    assert _error(CLIENT.replace('"0660"', '"0999"')).startswith("system.unix_socket_mode:")


def test_two_spellings_of_one_socket_path_are_one_listener() -> None:
    text = CLIENT.replace('"unix:/run/ptproxy/api.sock"', '"unix:/etc/ptproxy/run/http.sock"')
    assert _error(text) == (
        "routes[0].http_bind_address: unix:/etc/ptproxy/run/http.sock is also [general] http_bind_address"
    )


# -- packaging -------------------------------------------------------------------------------------

SYSTEMD = Path(__file__).resolve().parents[2] / "packaging" / "systemd"


@pytest.mark.parametrize("unit", ["ptproxy@.socket", "ptproxy-quic@.socket"])
def test_socket_units_pass_systemd_analyze_verify(tmp_path: Path, unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for path in SYSTEMD.iterdir():
        # verify insists that ExecStart exists; the service's own test checks it (test_systemd.py).
        (tmp_path / path.name).write_text(path.read_text().replace("/usr/bin/ptproxy", "/bin/true"))
    instance = unit.replace("@", "@demo")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / instance)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "ptproxy" not in result.stderr, result.stderr
    text = (SYSTEMD / unit).read_text()
    assert "\nFileDescriptorName=" in text and "\nAccept=yes" not in text  # named, one listener
