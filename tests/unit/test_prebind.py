"""``python -m ptproxy`` binds a server end's QUIC port before the command line's own imports
(ops/prebind.py); ops/cli.py takes that socket where it would have bound its own
(tests/unit/test_early_bind.py covers what it does with it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("argv", [
    [], ["-c", "a.toml"], ["--config=a.toml"], ["-ca.toml"],
    ["--log-level", "debug", "-c", "a.toml", "--log-format=json"],
    ["--log-level=warning", "--log-level", "trace"], ["--log-format", "text", "-c", "a.toml", "-c", "b.toml"],
])
def test_a_plain_command_line_reads_as_argparse_reads_it(argv: list[str]) -> None:
    plain = cli.plain_command_line(argv)
    assert plain is not None
    parsed = vars(cli.build_parser().parse_args(argv))
    assert vars(plain) == {k: parsed[k] for k in ("config", "check", "command", "log_level", "log_format")}


@pytest.mark.parametrize("argv", [
    ["--log-level", "loud"], ["--log-format=xml"], ["-c", "a.toml", "--check"], ["--version"], ["demo"],
    ["--log", "debug"],
])
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert cli.plain_command_line(argv) is None


def test_an_end_started_plainly_does_not_import_argparse(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(_server_text(free_udp_port()).replace("[tls]", "[transport]\ninitial_window = -5\n[tls]"))
    code = textwrap.dedent(
        """
        import sys
        had = "argparse" in sys.modules
        from ptproxy.ops import cli
        code = cli.main(["-c", sys.argv[1]])
        print(code, had or "argparse" not in sys.modules)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", HANDOFF_ENV)}
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.split() == ["1", "True"], out.stdout + out.stderr
    assert "initial_window" in out.stderr  # validation's error, as before


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
    fd = bound[2].fileno()
    sock = bind_quic_from_file(str(path), environ={})
    assert isinstance(sock, socket.socket) and sock.fileno() == fd  # that socket, as a socket.socket
    assert sock.getsockname() == ("127.0.0.1", port) and sock.type == socket.SOCK_DGRAM
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


def _tomllib_general(text: str) -> dict[str, object] | None:
    """tomllib's reading of the keys prebind reads (None: tomllib refuses the file)."""
    try:
        general = tomllib.loads(text).get("general")
    except ValueError:
        return None
    if not isinstance(general, dict):
        return {}
    return {k: general[k] for k in ("mode", "bind_address", "quic_port") if k in general}


PLAIN = _server_text(20010)
OTHER_WAYS = [  # each left to tomllib (the scan is not sure of it) or read the same
    PLAIN.replace('"Server"', "'Server'"),
    PLAIN.replace("20010", "20_010"),
    PLAIN.replace("20010", "0x4E2A"),
    PLAIN.replace("20010", "+20010"),
    PLAIN.replace("quic_port", '"quic_port"'),
    PLAIN.replace("[general]", "[ general ]"),
    PLAIN.replace("[general]", '["general"]'),
    PLAIN.replace("[general]", "[general] # the end"),
    PLAIN.replace("\n", "\r\n"),
    PLAIN.replace("20010", "20010 # QUIC"),
    PLAIN.replace("20010", "20010# QUIC"),
    PLAIN.replace('"127.0.0.1"', '"127.0.0.1" # here'),
    PLAIN.replace('"127.0.0.1"', '"127.0.\\u0030.1"'),
    PLAIN + "[general]\nquic_port = 5\n",
    PLAIN.replace("quic_port = 20010", "quic_port = 20010\nquic_port = 5"),
    'general.mode = "Server"\ngeneral.quic_port = 5\n',
    'general = { mode = "Server", quic_port = 5 }\n',
    'x = """\n[general]\nmode = "Server"\n"""\n',
    "x = '''\n[general]\nmode = 'Server'\n'''\n",
    "x = [\n[1, 2],\n]\n" + PLAIN,
    PLAIN.replace('peer_hostname = "client.example.com"', 'peer_hostname = [\n"a",\n]'),
    '[[general]]\nmode = "Server"\n',
    '[general.sub]\nmode = "Client"\n' + PLAIN,
    PLAIN.replace("mode", "mode.x = 1\nmode", 1),
    "\ufeff" + PLAIN,
    PLAIN.replace("20010", "020010"),
    PLAIN.replace("20010", "\u0662\u0660\u0660\u0661\u0660"),
    '[tls]\nca = "x"\n',
]


@pytest.mark.parametrize("text", [PLAIN, *OTHER_WAYS])
def test_the_plain_reading_is_tomllibs_or_none(text: str) -> None:
    plain = prebind._plain_general(text.encode())
    assert plain is None or plain == _tomllib_general(text), plain


def test_a_plainly_written_server_end_is_read_without_tomllib() -> None:
    expected = {"mode": "Server", "bind_address": "127.0.0.1", "quic_port": 20010}
    assert prebind._plain_general(PLAIN.encode()) == expected
    assert prebind._plain_general(PLAIN.replace("\n", "\r\n").encode()) == expected
    assert prebind._plain_general(PLAIN.replace("20010", "20010 # QUIC").encode()) == expected


_LINES = st.sampled_from([
    "[general]", "[tls]", "[general.sub]", "[[routes]]", "[ general ]", "# note", "", "   ",
    'mode = "Server"', 'mode = "Client"', "mode = 'Server'", 'mode="Server"', 'mode = "Server" # s',
    'bind_address = "127.0.0.1"', 'bind_address = "::1"', 'bind_address = "a\\"b"', 'bind_address = ""',
    "quic_port = 20010", "quic_port = 7", "quic_port = 0", "quic_port = 20_010", "quic_port = -1",
    "quic_port = 1.5", "quic_port = 20010 # q", 'quic_port = "20010"', "quic_port = [1]",
    'general.mode = "Server"', 'peer_hostname = "h"', "x = [", '"a",', "]", "x = {a = 1}",
    'x = """', '"""', "x = '''", "'''", '"quic_port" = 5', "mode.x = 1", "[general] # g",
])


@given(st.lists(_LINES, max_size=12), st.sampled_from(["\n", "\r\n"]))
def test_any_file_is_read_as_tomllib_reads_it_or_left_to_tomllib(lines: list[str], newline: str) -> None:
    text = newline.join(lines) + newline
    plain = prebind._plain_general(text.encode())
    reading = _tomllib_general(text)
    if plain is not None and reading is not None:
        assert plain == reading
    # A file tomllib refuses may still be read here: ops/cli.py then reports it and the process
    # exits, closing what was bound (test_a_start_up_that_fails_after_the_prebind_...).


def test_a_plain_prebind_imports_neither_tomllib_nor_socket(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(_server_text(free_udp_port()))
    code = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        from ptproxy.ops import prebind
        prebind.prebind(["-c", sys.argv[1]], environ={})
        assert prebind._bound is not None
        print(sorted({"tomllib", "socket", "enum", "typing", "re"} & (set(sys.modules) - before)))
        prebind.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


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
