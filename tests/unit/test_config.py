"""ptproxy.ops.config: Rust configs load unchanged, defaults, cross-field rules, one-line errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptproxy import errors
from ptproxy.ops.config import (
    Config,
    ConfigError,
    General,
    Limits,
    Metrics,
    System,
    Tls,
    Transport,
    load,
    parse,
    parse_socket_address,
    render_reference,
)

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).parents[2] / "docs" / "config.md"
FILE = Path("/etc/ptproxy/test.toml")

CLIENT = """
[general]
mode = "Client"
peer_hostname = "server.example.com"
[tls]
cert = "c.crt"
key = "c.key"
"""

SERVER = """
[general]
mode = "Server"
peer_hostname = "client.example.com"
http_connect_address = "localhost:8080"
[tls]
cert = "s.crt"
key = "s.key"
"""


TRANSPORT = CLIENT + "[transport]\n"
SYSTEM = CLIENT + "[system]\n"


def error_of(text: str, path: Path = FILE) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, path=path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def with_general(extra: str, base: str = CLIENT) -> str:
    return base.replace("[tls]", extra + "\n[tls]")


# --- the Rust original's example files ---------------------------------------------------------


def test_rust_client_example_loads_unchanged() -> None:
    config = load(DATA / "rust_client.toml")
    base = DATA.absolute()
    assert config.source == DATA / "rust_client.toml"
    assert config.general.mode == "Client"
    assert config.general.peer_hostname == "server.example.com"
    assert config.general.connect_host == "server.example.com"
    assert config.general.quic_port == 20010
    assert config.general.effective_http_bind_address == "127.0.0.1:20080"
    assert config.general.http_bind == ("127.0.0.1", 20080)
    assert config.general.http_connect is None
    assert config.tls.ca == base / "ca.crt"
    assert config.tls.cert == base / "client.crt"
    assert config.tls.key == base / "client.key"
    assert config.transport.initial_window == 487500
    assert config.transport.effective_receive_window == 487500
    assert config.transport.effective_send_window == 487500
    assert config.transport.congestion_algorithm == "Bbr"
    assert config.system.connect_interval == 1000
    assert config.metrics is None


def test_rust_server_example_loads_unchanged() -> None:
    config = load(str(DATA / "rust_server.toml"))
    assert config.general.mode == "Server"
    assert config.general.peer_hostname == "client.example.com"
    assert config.general.http_connect_address == "localhost:8080"
    assert config.general.http_connect == ("localhost", 8080)
    assert config.tls.cert == DATA.absolute() / "server.crt"
    assert config.transport == Transport()
    assert config.system == System()
    assert config.limits == Limits()


# --- defaults ----------------------------------------------------------------------------------


def test_minimal_client_gets_every_default() -> None:
    config = parse(CLIENT, path=FILE)
    g = config.general
    assert (g.quic_port, g.bind_address, g.connect_address) == (20010, "::", None)
    assert g.http_bind_address is None
    assert g.effective_http_bind_address == "[::]:20080"
    assert g.http_bind == ("::", 20080)
    assert config.tls.ca is None and config.tls.skip_verify is False
    assert msgspec.structs.asdict(config.transport) == {
        "max_idle_timeout": 5000,
        "keep_alive_interval": 2000,
        "initial_rtt": None,
        "max_concurrent_http_streams": 100,
        "stream_receive_window": None,
        "initial_window": 14720,
        "receive_window": None,
        "send_window": None,
        "socket_receive_buffer_size": None,
        "socket_send_buffer_size": None,
        "congestion_algorithm": "Bbr",
        "redundancy": "None",
        "redundancy_max_share": 1.0,
        "max_datagram_size": None,
    }
    assert config.transport.effective_receive_window == 14720
    assert config.transport.effective_send_window == 14720
    assert config.transport.effective_stream_receive_window == 1000000
    assert msgspec.structs.asdict(config.system) == {
        "connect_interval": 1000,
        "tcp_nodelay": True,
        "wait_for_first_attempt": True,
        "watchdog_factor": 1.5,
        "add_forwarded": False,
        "qlog_dir": None,
        "request_headers": None,
        "unix_socket_mode": "0666",
    }
    assert msgspec.structs.asdict(config.limits) == {
        "max_request_line": 8192,
        "max_header_bytes": 65536,
        "max_header_count": 100,
        "request_head_timeout": 10000,
        "keepalive_idle_timeout": 300000,
        "origin_connect_timeout": 5000,
        "origin_response_timeout": 60000,
        "stream_queue_timeout": 5000,
        "max_origin_idle_connections": 100,
        "origin_idle_timeout": 30000,
        "origin_preconnect": True,
        "max_handshakes": 64,
        "handshake_timeout": 3000,
        "retry_threshold": 20,
        "max_auto_window": 16777216,
        "max_auto_stream_window": 8388608,
        "tcp_idle_timeout": 300000,
        "handshakes_per_source": 5,
    }
    assert config.metrics is None


def test_explicit_windows_override_initial_window() -> None:
    text = CLIENT + "[transport]\ninitial_window = 10\nreceive_window = 20\nsend_window = 30\n"
    transport = parse(text, path=FILE).transport
    assert (transport.effective_receive_window, transport.effective_send_window) == (20, 30)


def test_connect_address_overrides_peer_hostname() -> None:
    config = parse(with_general('connect_address = "10.0.0.1"'), path=FILE)
    assert config.general.connect_host == "10.0.0.1"


def test_integer_watchdog_factor_is_accepted_as_float() -> None:
    config = parse(CLIENT + "[system]\nwatchdog_factor = 2\n", path=FILE)
    assert config.system.watchdog_factor == 2.0


def test_metrics_section() -> None:
    config = parse(CLIENT + '[metrics]\nbind_address = "[::1]:9100"\n', path=FILE)
    assert config.metrics == Metrics(bind_address="[::1]:9100")
    assert config.metrics.bind == ("::1", 9100)
    assert error_of(CLIENT + "[metrics]\n") == "metrics.bind_address: required"


def test_structs_are_frozen() -> None:
    config = parse(CLIENT, path=FILE)
    with pytest.raises(AttributeError):
        config.general.quic_port = 1  # type: ignore[misc]


# --- cross-field rules -------------------------------------------------------------------------


def test_server_mode_requires_http_connect_address() -> None:
    text = SERVER.replace('http_connect_address = "localhost:8080"\n', "")
    assert error_of(text) == "general.http_connect_address: required in Server mode"


def test_server_mode_forbids_http_bind_address() -> None:
    text = with_general('http_bind_address = "127.0.0.1:1"', SERVER)
    assert error_of(text) == "general.http_bind_address: not allowed in Server mode"


def test_client_mode_forbids_http_connect_address() -> None:
    text = with_general('http_connect_address = "localhost:80"')
    assert error_of(text) == "general.http_connect_address: not allowed in Client mode"


def test_allowed_sources_are_networks_and_server_only() -> None:
    ok = with_general('allowed_sources = ["203.0.113.0/24", "2001:db8::/32"]', SERVER)
    assert parse(ok, path=FILE).general.allowed_sources == ["203.0.113.0/24", "2001:db8::/32"]
    assert parse(SERVER, path=FILE).general.allowed_sources is None
    client = with_general('allowed_sources = ["10.0.0.0/8"]')
    assert error_of(client) == "general.allowed_sources: only allowed in Server mode"
    host_bits = with_general('allowed_sources = ["203.0.113.7/24"]', SERVER)
    assert error_of(host_bits).startswith("general.allowed_sources: '203.0.113.7/24' is not a network")
    assert "has host bits set" in error_of(host_bits)
    garbage = with_general('allowed_sources = ["example.com"]', SERVER)
    assert error_of(garbage).startswith("general.allowed_sources: 'example.com' is not a network")
    empty = with_general("allowed_sources = []", SERVER)
    assert error_of(empty).startswith("general.allowed_sources: an empty list would refuse every client")


def test_rules_also_apply_to_direct_construction() -> None:
    with pytest.raises(ValueError, match="http_connect_address: required in Server mode"):
        General(mode="Server", peer_hostname="x")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('http_bind_address = "localhost:80"', "general.http_bind_address: expected an IP"),
        ('http_bind_address = "127.0.0.1"', "general.http_bind_address: expected a socket addr"),
        ('http_bind_address = "::1:80"', "general.http_bind_address: expected a socket addr"),
        ('http_bind_address = "1.2.3.4:0"', "general.http_bind_address: port out of range"),
        ('http_bind_address = "[1.2.3.4]:80"', "general.http_bind_address: only IPv6"),
        ('bind_address = "example.com"', "general.bind_address: expected an IP address"),
    ],
)
def test_bad_addresses_name_the_field(extra: str, expected: str) -> None:
    assert error_of(with_general(extra)).startswith(expected)


def test_bad_http_connect_address_names_the_field() -> None:
    text = SERVER.replace('"localhost:8080"', '"localhost"')
    assert error_of(text).startswith("general.http_connect_address: expected a socket address")


def test_bad_metrics_address_names_the_field() -> None:
    assert error_of(CLIENT + '[metrics]\nbind_address = "x:1"\n').startswith(
        "metrics.bind_address: expected an IP address"
    )


# --- parse_socket_address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::]:20080", ("::", 20080)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
        ("localhost:8080", ("localhost", 8080)),
        ("origin.internal:1", ("origin.internal", 1)),
    ],
)
def test_parse_socket_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_socket_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host", ":80", "host:", "host:x", "host:65536", "[::1]", "::1:80", "[a]:1"]
)
def test_parse_socket_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_socket_address(text)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_parse_socket_address_round_trips_ips(ip: object, port: int) -> None:
    host = str(ip)
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert parse_socket_address(text, require_ip=True) == (host, port)


# --- unknown fields, types, enums, ranges ------------------------------------------------------


@pytest.mark.parametrize("section", ["general", "tls", "transport", "system", "limits", "metrics"])
def test_unknown_field_in_each_section_is_named(section: str) -> None:
    if section in ("general", "tls"):
        text = CLIENT.replace(f"[{section}]\n", f"[{section}]\nbogus = 1\n")
    elif section == "metrics":
        text = CLIENT + '[metrics]\nbind_address = "127.0.0.1:9100"\nbogus = 1\n'
    else:
        text = CLIENT + f"[{section}]\nbogus = 1\n"
    assert error_of(text) == f"{section}.bogus: unknown field"


def test_unknown_top_level_table_is_named() -> None:
    assert error_of(CLIENT + "[bogus]\nx = 1\n") == "bogus: unknown field"


def test_source_is_not_a_settable_key() -> None:
    assert error_of('source = "x"\n' + CLIENT) == "source: unknown field"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CLIENT.replace('"Client"', '"client"'),
            'general.mode: expected one of "Client", "Server", got "client"',
        ),
        (
            CLIENT + '[transport]\ncongestion_algorithm = "bbr"\n',
            'transport.congestion_algorithm: expected one of "Bbr", "Cubic", "NewReno", "None", '
            'got "bbr"',
        ),
        (TRANSPORT + 'initial_window = "5"', "transport.initial_window: expected integer"),
        (TRANSPORT + "initial_window = 0", "transport.initial_window: expected integer >= 1, got"),
        (TRANSPORT + "max_datagram_size = 1199", "transport.max_datagram_size: expected"),
        (TRANSPORT + "max_datagram_size = 16385", "transport.max_datagram_size: expected"),
        (SYSTEM + "tcp_nodelay = 1", "system.tcp_nodelay: expected boolean, got integer"),
        (SYSTEM + "watchdog_factor = 0", "system.watchdog_factor: expected float > 0"),
        (with_general("quic_port = 70000"), "general.quic_port: expected integer <= 65535"),
        (CLIENT.replace('cert = "c.crt"', "cert = 5"), "tls.cert: expected string, got integer"),
        (CLIENT.replace('key = "c.key"\n', ""), "tls.key: required"),
        (CLIENT.replace('peer_hostname = "server.example.com"', ""), "general.peer_hostname: requ"),
        (CLIENT.split("[tls]")[0], "tls: required"),
        ('general = 5\n[tls]\ncert = "c"\nkey = "k"\n', "general: expected table"),
        (CLIENT + "[limits]\nrequest_head_timeout = 0\n", "limits.request_head_timeout: expected"),
    ],
)
def test_bad_value_names_the_dotted_path(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_enum_message_is_exact() -> None:
    expected = 'general.mode: expected one of "Client", "Server", got "client"'
    assert error_of(CLIENT.replace('"Client"', '"client"')) == expected


# --- paths -------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    file = tmp_path / "conf" / "client.toml"
    file.parent.mkdir()
    text = CLIENT.replace('cert = "c.crt"', 'cert = "certs/c.crt"\nca = "../ca.pem"')
    file.write_text(text + '[system]\nqlog_dir = "qlog"\n')
    config = load(file)
    assert config.tls.cert == file.parent / "certs" / "c.crt"
    assert config.tls.key == file.parent / "c.key"
    assert config.tls.ca == file.parent / ".." / "ca.pem"
    assert config.system.qlog_dir == file.parent / "qlog"


def test_absolute_paths_are_kept_and_files_are_not_checked() -> None:
    config = parse(CLIENT.replace('"c.crt"', '"/nowhere/c.crt"'), path=FILE)
    assert config.tls.cert == Path("/nowhere/c.crt")
    assert config.tls.key == Path("/etc/ptproxy/c.key")


def test_relative_config_path_still_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(CLIENT)
    config = load("c.toml")
    assert config.source == Path("c.toml")
    assert config.tls.cert == tmp_path / "c.crt"


# --- file-level errors -------------------------------------------------------------------------


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"


def test_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read: Is a directory$"):
        load(tmp_path)


def test_invalid_toml_names_the_line() -> None:
    message = error_of('[general]\nmode = "Client"\npeer_hostname = \n')
    assert message.startswith("line 3: invalid TOML: ")


def test_invalid_toml_at_end_of_document() -> None:
    assert error_of('[general]\nmode = "Client').startswith("invalid TOML: ")


def test_invalid_utf8_is_one_line() -> None:
    assert error_of(b"\xff\xfe") == "invalid UTF-8 at byte 0"


def test_config_error_is_the_shared_class() -> None:
    assert ConfigError is errors.ConfigError


# --- rendered reference ------------------------------------------------------------------------


def test_docs_are_up_to_date() -> None:
    stale = "docs/config.md is stale; run: python -m ptproxy.ops.config > docs/config.md"
    assert DOCS.read_text() == render_reference(), stale


@pytest.mark.parametrize("cls", [General, Tls, Transport, System, Limits, Metrics])
def test_every_field_is_documented_in_the_reference(cls: type[msgspec.Struct]) -> None:
    text = render_reference()
    for field in msgspec.structs.fields(cls):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field.name}` |"))
        assert row.rstrip(" |").split("|")[-1].strip(), f"{field.name} has no description"


def test_reference_shows_actual_defaults() -> None:
    text = render_reference()
    assert "| `quic_port` | integer (1..65535) | `20010` |" in text
    algorithms = '"Bbr" \\| "Cubic" \\| "NewReno" \\| "None"'
    assert f'| `congestion_algorithm` | {algorithms} | `"Bbr"` |' in text
    assert "| `mode` | " in text and "| required |" in text
    assert "| `source` |" not in text  # set by load(), not a key of the file


def test_config_struct_defaults_match_sections() -> None:
    general = General(mode="Client", peer_hostname="x")
    config = Config(general=general, tls=Tls(cert=Path("c"), key=Path("k")))
    assert (config.transport, config.system, config.limits) == (Transport(), System(), Limits())
