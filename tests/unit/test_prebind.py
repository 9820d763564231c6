"""``python -m ptproxy`` binds a server end's QUIC port before the command line's own imports
(ops/prebind.py); ops/cli.py takes that socket where it would have bound its own
(tests/unit/test_early_bind.py covers what it does with it)."""

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
from ptproxy.ops import cli, prebind
from ptproxy.ops.cli import HANDOFF_ENV, bind_quic_from_file
from tests.support.bindwatch import WATCH_PREAMBLE, close_registered_sockets, free_udp_port


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    prebind.close()
    close_registered_sockets()


def _server_text(port: int, extra: str = "", bind: str = "127.0.0.1", mode: str = "Server") -> str:
    return (
        f'[general]\nmode = "{mode}"\npeer_hostname = "client.example.com"\nbind_address = "{bind}"\n'
        f'quic_port = {port}\nhttp_connect_address = "127.0.0.1:9"\nconnect_address = "127.0.0.1"\n'
        '[tls]\ncert = "s.crt"\nkey = "s.key"\n' + extra
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize(("argv", "path"), [
    ([], prebind.DEFAULT_CONFIG),
    (["-c", "a.toml"], "a.toml"),
    (["--config", "a.toml"], "a.toml"),
    (["--config=a.toml"], "a.toml"),
    (["-ca.toml"], "a.toml"),
    (["-c=a.toml"], "a.toml"),
    (["--log-level", "debug", "-c", "a.toml", "--log-format=json"], "a.toml"),
    (["-c", "a.toml", "-c", "b.toml"], "b.toml"),  # argparse: the last one
    (["-c", "a.toml", "--check"], None),
    (["demo"], None),
    (["healthcheck"], None),
    (["--version"], None),
    (["-h"], None),
    (["--conf", "a.toml"], None),  # an abbreviation: argparse's to read
    (["-c"], None),
    (["-c", "--check"], None),
    (["-c", "a.toml", "extra"], None),
])
def test_only_a_plain_command_line_names_a_file(argv: list[str], path: str | None) -> None:
    assert prebind._config_path(argv) == path
    if path is not None:  # the file the command line's parser reads it as naming
        args = cli.build_parser().parse_args(argv)
        assert args.config == path and args.command is None and not args.check


def test_the_defaults_are_the_command_lines() -> None:
    assert prebind.DEFAULT_CONFIG == cli.DEFAULT_CONFIG
    assert prebind._DEFAULTS == (cli.DEFAULT_BIND_ADDRESS, cli.DEFAULT_QUIC_PORT)


def test_the_socket_bound_first_is_the_one_the_command_line_registers(tmp_path: Path) -> None:
    port = free_udp_port()
    path = tmp_path / "server.toml"
    path.write_text(_server_text(port))
    prebind.prebind(["-c", str(path)], environ={})
    assert not _port_free(port)
    bound = prebind._bound
    assert bound is not None
    sock = bind_quic_from_file(str(path), environ={})
    assert sock is bound[2] and sock.getsockname() == ("127.0.0.1", port)
    assert sockets.inherited_socket("quic", "datagram") is sock
    assert prebind._bound is None
    sock.close()


@pytest.mark.parametrize("text", [
    _server_text(20010, mode="Client"),
    _server_text(20010, bind="localhost"),  # validation names the field
    _server_text(20010).replace("quic_port = 20010", "quic_port = 0"),
    _server_text(20010).replace("quic_port = 20010", 'quic_port = "20010"'),
    "[general\nmode = 'Server'\n",
])
def test_nothing_is_bound_for_what_is_not_plainly_a_server_end(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    prebind.prebind(["-c", str(path)], environ={})
    assert prebind._bound is None


@pytest.mark.parametrize("passed", ["LISTEN_FDS", HANDOFF_ENV])
def test_nothing_is_bound_when_a_socket_is_being_passed(tmp_path: Path, passed: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(_server_text(free_udp_port()))
    prebind.prebind(["-c", str(path)], environ={passed: "1"})
    assert prebind._bound is None


def test_a_socket_for_another_address_is_closed_not_taken(tmp_path: Path) -> None:
    port = free_udp_port()
    path = tmp_path / "server.toml"
    path.write_text(_server_text(port))
    prebind.prebind(["-c", str(path)], environ={})
    assert prebind.take("127.0.0.1", port + 1 if port < 65535 else port - 1) is None
    assert prebind._bound is None and _port_free(port)


# Run as ``python -c``: ``python -m ptproxy`` (or the console script) with a finder that, at the first import of one of the
# watched modules, checks whether the QUIC port is bound (binding it too: EADDRINUSE if it is).
CHECK = WATCH_PREAMBLE + textwrap.dedent(
    """
    import runpy
    START = sys.argv[4]
    sys.argv = ["ptproxy", "-c", sys.argv[1]]
    if START == "python -m":
        runpy.run_module("ptproxy", run_name="__main__", alter_sys=True)
    else:  # the console script's wrapper (pyproject's entry point)
        from ptproxy.__main__ import main
        sys.exit(main())
    """
)


@pytest.mark.parametrize("start", ["python -m", "console script"])
def test_python_m_ptproxy_and_the_script_bind_before_the_command_lines_imports(tmp_path: Path, start: str) -> None:
    port = free_udp_port()
    config = tmp_path / "server.toml"
    config.write_text(_server_text(port))
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", HANDOFF_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(config), str(port), "ptproxy.ops.cli,argparse,logging", start],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.stdout.strip().startswith("bound before "), out.stdout + out.stderr


def test_a_start_up_that_fails_after_the_prebind_names_the_field_and_frees_the_port(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "server.toml"
    config.write_text(_server_text(port, extra="[transport]\ninitial_window = -5\n"))
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", HANDOFF_ENV)}
    out = subprocess.run(
        [sys.executable, "-m", "ptproxy", "-c", str(config)], capture_output=True, text=True, timeout=60, env=env,
    )
    err = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(err) == 1, out.stderr
    assert err[0].startswith("ptproxy: error: ") and "initial_window" in err[0], err
    assert _port_free(port)
