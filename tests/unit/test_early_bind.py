"""The server end binds its QUIC port before the heavy part of start-up (ops/cli.py
``bind_quic_early``): the socket is registered as the one passed as ``quic``, which the listener
takes as it takes systemd's; nothing is bound when a socket is being passed or binding fails.

The datagram that arrives meanwhile being answered is tests/integration/test_restarts.py's."""

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
from ptproxy.ops import handoff
from ptproxy.ops.cli import HANDOFF_ENV, bind_quic_early
from ptproxy.ops.config import Config, parse

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
    for sock in sockets.inherited.values():
        sock.close()
    sockets.inherited.clear()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_server_end_binds_and_registers_its_socket_as_quic() -> None:
    port = _free_udp_port()
    sock = bind_quic_early(_config("Server", port=port), environ={})
    assert sock is not None
    assert sock.type == socket.SOCK_DGRAM and sock.getsockname() == ("127.0.0.1", port)
    assert sockets.inherited_socket("quic", "datagram") is sock  # what the listener takes
    sock.close()


def test_an_ipv6_address_binds_dual_stack_as_the_listener_would() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = bind_quic_early(_config("Server", bind="::", port=_free_udp_port()), environ={})
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
    assert bind_quic_early(_config("Server", port=_free_udp_port()), environ={passed: "1"}) is None
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
CHECK = textwrap.dedent(
    """
    import importlib.abc, socket, sys
    PORT = int(sys.argv[2])

    class Check(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("ptproxy.ops.app", "aioquic"):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.bind(("127.0.0.1", PORT))
                except OSError:
                    print("bound before", name)
                else:
                    print("not bound before", name)
                sys.stdout.flush()
                import os
                os._exit(0)
            return None

    sys.meta_path.insert(0, Check())
    from ptproxy.ops.cli import main
    main(["-c", sys.argv[1]])
    """
)


def test_the_port_is_bound_before_the_app_and_aioquic_are_imported(tmp_path: Path) -> None:
    port = _free_udp_port()
    config = tmp_path / "server.toml"
    config.write_text(
        "[general]\nmode = \"Server\"\npeer_hostname = \"client.example.com\"\n"
        f"bind_address = \"127.0.0.1\"\nquic_port = {port}\nhttp_connect_address = \"127.0.0.1:9\"\n"
        "[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", HANDOFF_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(config), str(port)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.stdout.strip() == "bound before ptproxy.ops.app", out.stdout + out.stderr
