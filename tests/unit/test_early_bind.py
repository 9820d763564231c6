"""Each end binds its listening sockets before the heavy part of start-up (ops/cli.py): the server
end its QUIC port (``bind_quic_from_file``, before the configuration module; ``bind_quic_early``),
the client end its HTTP/TCP listeners (``bind_listeners_early``). Each socket is registered as the
one passed under its listener's name, which the listener takes as it takes systemd's; nothing is
bound when a socket is being passed; errors are the listener's own, and a failed start-up leaves
nothing bound.

The datagram that arrives meanwhile being answered is tests/integration/test_restarts.py's, the
connection that arrives meanwhile being served tests/integration/test_early_listeners.py's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptproxy import sockets
from ptproxy.ops import cli, handoff
from ptproxy.ops.cli import HANDOFF_ENV, bind_listeners_early, bind_quic_early, bind_quic_from_file
from ptproxy.ops.config import Config, General, parse
from tests.support.bindwatch import WATCH_PREAMBLE, close_registered_sockets, free_udp_port

FILE = Path("/etc/ptproxy/test.toml")


def _config(mode: str, bind: str = "127.0.0.1", port: int = 20010) -> Config:
    general = f'mode = "{mode}"\npeer_hostname = "peer.example.com"\nquic_port = {port}\n'
    if mode == "Server":
        general += f'bind_address = "{bind}"\nhttp_connect_address = "localhost:8080"\n'
    else:
        general += 'connect_address = "127.0.0.1"\n'
    return parse(f'[general]\n{general}[tls]\ncert = "c.crt"\nkey = "c.key"\n', path=FILE)


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    yield
    close_registered_sockets()


def test_the_server_end_binds_and_registers_its_socket_as_quic() -> None:
    port = free_udp_port()
    sock = bind_quic_early(_config("Server", port=port), environ={})
    assert sock is not None
    assert sock.type == socket.SOCK_DGRAM and sock.getsockname() == ("127.0.0.1", port)
    assert sockets.inherited_socket("quic", "datagram") is sock  # what the listener takes
    sock.close()


def test_an_ipv6_address_binds_dual_stack_as_the_listener_would() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = bind_quic_early(_config("Server", bind="::", port=free_udp_port()), environ={})
    except OSError:
        pytest.skip("IPv6 unavailable")
    if sock is None:
        pytest.skip("IPv6 unavailable")
    assert sock.family == socket.AF_INET6
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    sock.close()


def test_nothing_is_bound_for_a_client_end() -> None:
    assert bind_quic_early(_config("Client"), environ={}) is None
    assert sockets.inherited == {}


@pytest.mark.parametrize("passed", ["LISTEN_FDS", HANDOFF_ENV])
def test_nothing_is_bound_when_a_socket_is_being_passed(passed: str) -> None:
    assert bind_quic_early(_config("Server", port=free_udp_port()), environ={passed: "1"}) is None
    assert sockets.inherited == {}


def test_the_handoff_variable_is_the_one_handoff_sets() -> None:
    assert HANDOFF_ENV == handoff.ENV


def test_a_port_in_use_is_left_to_the_listener_to_report() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert bind_quic_early(_config("Server", port=port), environ={}) is None
    assert sockets.inherited == {}


# Run as ``python -c``: at the first import of the app (which imports aioquic, cryptography and
# the TLS set-up) the QUIC port must already be bound; the check binds it too and expects EADDRINUSE.
CHECK = WATCH_PREAMBLE + textwrap.dedent(
    """
    from ptproxy.ops.cli import main
    main(["-c", sys.argv[1]])
    """
)


def test_the_port_is_bound_before_the_app_and_aioquic_are_imported(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "server.toml"
    config.write_text(
        "[general]\nmode = \"Server\"\npeer_hostname = \"client.example.com\"\n"
        f"bind_address = \"127.0.0.1\"\nquic_port = {port}\nhttp_connect_address = \"127.0.0.1:9\"\n"
        "[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", HANDOFF_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(config), str(port), "ptproxy.ops.app,aioquic"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.stdout.strip() == "bound before ptproxy.ops.app", out.stdout + out.stderr


def test_the_port_is_bound_before_the_configuration_module_is_imported(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "server.toml"
    config.write_text(_server_text(port))
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", HANDOFF_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(config), str(port), "ptproxy.ops.config,msgspec"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.stdout.strip() in ("bound before ptproxy.ops.config", "bound before msgspec"), out.stdout + out.stderr


def _server_text(port: int, extra: str = "", general: str = 'bind_address = "127.0.0.1"\n') -> str:
    return (
        f'[general]\nmode = "Server"\npeer_hostname = "client.example.com"\n{general}quic_port = {port}\n'
        'http_connect_address = "127.0.0.1:9"\n[tls]\ncert = "s.crt"\nkey = "s.key"\n' + extra
    )


def test_the_early_defaults_are_the_configurations() -> None:
    general = General(mode="Server", peer_hostname="client.example.com", http_connect_address="127.0.0.1:9")
    assert (cli.DEFAULT_BIND_ADDRESS, cli.DEFAULT_QUIC_PORT) == (general.bind_address, general.quic_port)


def test_the_server_end_binds_from_the_file_as_written(tmp_path: Path) -> None:
    port = free_udp_port()
    path = tmp_path / "server.toml"
    path.write_text(_server_text(port))
    sock = bind_quic_from_file(str(path), environ={})
    assert sock is not None and sock.getsockname() == ("127.0.0.1", port)
    assert sockets.inherited_socket("quic", "datagram") is sock
    sock.close()


@pytest.mark.parametrize("text", [
    "[general\nmode = 'Server'\n",  # not TOML: load reports it
    "[tls]\ncert = 'c'\n",  # no [general]
    _server_text(20010).replace('mode = "Server"', 'mode = "Client"'),
    _server_text(20010).replace("quic_port = 20010", 'quic_port = "20010"'),
    _server_text(20010).replace("quic_port = 20010", "quic_port = 0"),
    _server_text(20010, general='bind_address = "localhost"\n'),  # validation names the field
])
def test_nothing_is_bound_from_a_file_validation_will_refuse(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert bind_quic_from_file(str(path), environ={}) is None
    assert bind_quic_from_file(str(tmp_path / "missing.toml"), environ={}) is None
    assert sockets.inherited == {}


def test_a_start_up_that_fails_after_the_early_bind_names_the_field_and_frees_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_udp_port()
    path = tmp_path / "server.toml"
    path.write_text(_server_text(port, extra="[transport]\ninitial_window = -5\n"))
    assert cli.main(["-c", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptproxy: error: ") and "initial_window" in err[0], err
    assert sockets.inherited == {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # nothing left bound


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _client(http_port: int, routes: str = "") -> Config:
    return parse(
        '[general]\nmode = "Client"\npeer_hostname = "server.example.com"\nconnect_address = "127.0.0.1"\n'
        f'http_bind_address = "127.0.0.1:{http_port}"\n[tls]\ncert = "c.crt"\nkey = "c.key"\n' + routes,
        path=FILE,
    )


def test_the_client_end_binds_its_listeners_under_their_names() -> None:
    http, tcp = _free_tcp_port(), _free_tcp_port()
    routes = f'[[routes]]\nname = "ssh"\ntcp_bind_address = "127.0.0.1:{tcp}"\n'
    assert bind_listeners_early(_client(http, routes), environ={}) == ["http", "ssh"]
    for name, port in (("http", http), ("ssh", tcp)):
        sock = sockets.listener_socket(name, ("127.0.0.1", 1), field="unused")  # the early one, not a new bind
        assert sock.getsockname() == ("127.0.0.1", port)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        sock.close()
    assert bind_listeners_early(_config("Server"), environ={}) == []
    assert bind_listeners_early(_client(_free_tcp_port()), environ={"LISTEN_FDS": "1"}) == []
    assert sockets.inherited == {}


def test_a_client_listener_in_use_is_the_listeners_error_and_nothing_stays_bound() -> None:
    http = _free_tcp_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        routes = f'[[routes]]\nname = "ssh"\ntcp_bind_address = "127.0.0.1:{busy}"\n'
        with pytest.raises(sockets.ListenerError) as early:
            bind_listeners_early(_client(http, routes), environ={})
        with pytest.raises(sockets.ListenerError) as late:
            sockets.listener_socket("ssh", ("127.0.0.1", busy), field="routes[0].tcp_bind_address")
    assert str(early.value) == str(late.value)
    assert str(early.value).startswith(f"routes[0].tcp_bind_address: cannot listen at 127.0.0.1:{busy}: ")
    assert sockets.inherited == {}
    with socket.socket() as again:
        again.bind(("127.0.0.1", http))  # the HTTP listener bound before it was closed
