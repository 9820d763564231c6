"""Command line: ``ptproxy [-c PATH] [--check]``, ``ptproxy demo``, ``ptproxy --version``.

Expected failures print one line (``ptproxy: error: …``) and exit 1, never a traceback.

Start-up order (as socket activation would have it): each end binds its listening sockets before
asyncio, aioquic, cryptography and the TLS set-up are imported (~100-200 ms of a start-up).

- The server end binds its UDP port (:func:`bind_quic_from_file`) from the file's ``[general]``
  table as written, before even the configuration module (msgspec and its structures, ~20-30 ms)
  is imported (``python -m ptproxy`` even before this module's own imports: ops/prebind.py, whose
  socket :func:`bind_quic_from_file` takes); the full validation follows. A client that dials while the rest of start-up runs
  (a restart, or both ends launched together) has its handshake wait in the socket's receive
  buffer, answered when the endpoint first reads, instead of drawing ICMP port unreachable.
- The client end binds its HTTP and TCP listeners (:func:`bind_listeners_early`) right after the
  configuration is validated: a connection made while the rest of start-up runs waits in the
  listen backlog and is served once the tunnel is up, instead of being refused.

Each early socket is registered as the socket passed under its listener's name
(ptproxy/sockets.py), which the listener takes as it takes systemd's. Nothing is bound early when
sockets are being passed (``LISTEN_FDS``, a hand-off). Errors stay what they were: the client's
listeners raise the listener's own error (same message, exit 1); a server bind that fails is left
to the listener to report, after the certificates are checked, as before; a start-up that fails
after binding closes what it bound (:func:`ptproxy.sockets.discard_early`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Coroutine, Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ptproxy._version import __version__
from ptproxy.errors import PtproxyError

if TYPE_CHECKING:
    import argparse

    from ptproxy.ops.config import Config

__all__ = [
    "main",
    "build_parser",
    "plain_command_line",
    "version_text",
    "run_loop",
    "bind_quic_early",
    "bind_quic_from_file",
    "bind_listeners_early",
    "read_general",
]

DEFAULT_CONFIG = "/etc/ptproxy/config.toml"
logger = logging.getLogger("ptproxy")
# ops/handoff.py's ENV (not imported here: that module imports asyncio, which the early bind
# comes before; tests/unit check the two agree).
HANDOFF_ENV = "PTPROXY_HANDOFF"
# [general] defaults the server end binds with before the configuration module is imported
# (ops/config.py's General; tests/unit check the two agree).
DEFAULT_BIND_ADDRESS = "::"
DEFAULT_QUIC_PORT = 20010


def version_text() -> str:
    """Version line plus the implementation of each hot path and the event loop."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    from ptproxy.tunnel import udp_features, udp_implementation
    from ptproxy.wire import chunked, fieldcodec
    from ptproxy.wire import framing as pump

    impls = {fieldcodec.IMPLEMENTATION, chunked.IMPLEMENTATION, pump.IMPLEMENTATION}
    speedups = impls.pop() if len(impls) == 1 else "mixed"
    try:
        loop = f"uvloop {installed_version('uvloop')}"
    except PackageNotFoundError:
        loop = "asyncio"
    batching = ", ".join(name for name, used in udp_features().items() if used) or "none"
    return (
        f"ptproxy {__version__} (speedups: {speedups}; UDP I/O: {udp_implementation()}, batching: "
        f"{batching}; aioquic {installed_version('aioquic')}; {loop}; Python {sys.version.split()[0]})"
    )


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from ptproxy.ops.logs import LOG_LEVELS

    class _VersionAction(argparse.Action):
        """``--version``: print :func:`version_text` and exit (argparse's own action needs the text
        when the parser is built)."""

        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            sys.stdout.write(version_text() + "\n")
            parser.exit()

    parser = argparse.ArgumentParser(
        prog="ptproxy",
        description="Point-to-point HTTP/1.1 reverse proxy over one mutually authenticated HTTP/3 session.",
        # Raw: --version prints its one line as is (the default formatter wraps it at 80 columns).
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"configuration file (TOML; default {DEFAULT_CONFIG})")
    parser.add_argument("--check", action="store_true",
                        help="load and validate the configuration, certificates and key; print OK and exit")
    # The version line is built only when asked for: it reads installed package metadata
    # (importlib.metadata, ~15-20 ms), which serving never needs.
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version line and exit")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log verbosity (default info)")
    parser.add_argument("--log-format", default="text", choices=("text", "json"),
                        help="text (like the original) or json (one object per line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a loopback demo: origin + server end + client end, throwaway certificates")
    demo.add_argument("--http-port", type=int, default=20080, help="client end's HTTP port (default 20080; 0 = any)")
    demo.add_argument("--quic-port", type=int, default=20010, help="server end's UDP port (default 20010; 0 = any)")
    demo.add_argument("--once", action="store_true", help="exit after the first request went through")
    sub.add_parser("healthcheck", help="exit 0 if the tunnel answers (metrics /readyz, else the listener)")
    return parser


def plain_command_line(argv: Sequence[str] | None = None) -> SimpleNamespace | None:
    """What :func:`build_parser` makes of a plainly written command line that runs an end
    (``-c``/``--config`` and the log options with valid values: ops/prebind.py's
    ``plain_options``), without argparse: its import and building the parser (HelpFormatter
    imports shutil, gettext imports locale) were ~30M instructions of every start. None for
    anything else, which argparse reads (and reports)."""
    from ptproxy.ops.logs import LOG_LEVELS
    from ptproxy.ops.prebind import plain_options

    options = plain_options(list(sys.argv[1:] if argv is None else argv))
    if options is None:
        return None
    level, form = options.get("log_level", "info"), options.get("log_format", "text")
    if level not in LOG_LEVELS or form not in ("text", "json"):
        return None
    return SimpleNamespace(config=options["config"], check=False, command=None, log_level=level, log_format=form)


def _sockets_passed(environ: Mapping[str, str]) -> bool:
    """Are listening sockets being passed to this process (systemd, a hand-off)?"""
    return "LISTEN_FDS" in environ or HANDOFF_ENV in environ


def read_general(path: str) -> Mapping[str, Any] | None:
    """The file's ``[general]`` table as written (parsed, not validated); None when the file
    cannot be read or parsed or has no such table (``load`` then says why)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            general = tomllib.load(f).get("general")
    except (OSError, ValueError):  # tomllib.TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return general if isinstance(general, dict) else None


def bind_quic_from_file(path: str, environ: Mapping[str, str] = os.environ) -> socket.socket | None:
    """Server end: bind the QUIC UDP port named by the file at ``path``, before the configuration
    module is imported (see :func:`bind_quic_early`). Nothing is bound (None) for anything but a
    plainly written server end (``mode = "Server"``, an IP ``bind_address``, an integer
    ``quic_port`` in range, or their defaults): validation then reports what is wrong."""
    general = read_general(path)
    if general is None or general.get("mode") != "Server" or _sockets_passed(environ):
        return None
    address = general.get("bind_address", DEFAULT_BIND_ADDRESS)
    port = general.get("quic_port", DEFAULT_QUIC_PORT)
    if not isinstance(address, str) or type(port) is not int or not 1 <= port <= 65535:
        return None
    return _bind_quic(address, port)


def bind_quic_early(config: Config, environ: Mapping[str, str] = os.environ) -> socket.socket | None:
    """Server end: bind the QUIC UDP port now, and register the socket as the one passed as
    ``quic`` (ptproxy/sockets.py), which the listener takes as it takes systemd's; it applies the
    buffer sizes and Don't Fragment then, as to any passed socket (ptproxy/tunnel/udp.py).

    The address family is the one ``open_udp_socket`` picks for a server end (IPv6 dual-stack for
    an IPv6 address). Nothing is bound (None) for a client end, when a socket is being passed to
    this process (``LISTEN_FDS``, a hand-off) or was bound already (:func:`bind_quic_from_file`),
    or when binding fails: the listener then binds as before and reports the error where it always
    did (after the certificates are checked)."""
    general = config.general
    if general.mode != "Server" or _sockets_passed(environ):
        return None
    return _bind_quic(general.bind_address, general.quic_port)


def _bind_quic(address: str, port: int) -> socket.socket | None:
    from ptproxy import sockets
    from ptproxy.ops import prebind

    if "quic" in sockets.inherited:
        prebind.close()
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        prebind.close()
        return None  # validation names the field
    sock = prebind.take(address, port)  # bound by __main__ before this module's imports
    if sock is not None:
        sockets.adopt("quic", sock, early=True)
        return sock
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        logger.debug("binding the QUIC port early failed (%s); the listener binds it", exc)
        return None
    sockets.adopt("quic", sock, early=True)
    return sock


def bind_listeners_early(config: Config, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Client end: bind every HTTP and TCP listener of ``config`` now, each registered under the
    name its listener takes a passed socket by (``http``, else the route's name), with the field
    and message that listener would raise (:class:`ptproxy.sockets.ListenerError`). Returns the
    names bound; none for a server end or when sockets are being passed. On an error the ones
    already bound are closed before it propagates."""
    if config.general.mode != "Client" or _sockets_passed(environ):
        return []
    from ptproxy import sockets
    from ptproxy.ops.config import parse_socket_address

    wanted: list[tuple[str, tuple[str, int], str]] = [("http", config.general.http_bind, "[general] http_bind_address")]
    for i, route in enumerate(config.routes):
        if route.http_bind_address is not None:
            address = parse_socket_address(route.http_bind_address, require_ip=True)
            wanted.append((route.name, address, f"routes[{i}].http_bind_address"))
        if route.tcp_bind_address is not None:
            address = parse_socket_address(route.tcp_bind_address, require_ip=True)
            wanted.append((route.name, address, f"routes[{i}].tcp_bind_address"))
    bound: list[str] = []
    try:
        for name, address, field in wanted:
            if name in sockets.inherited:
                continue  # two listeners of one name: theirs to report
            sock = sockets.listener_socket(name, address, field=field, unix_mode=config.system.unix_mode)
            sockets.adopt(name, sock, early=True)
            bound.append(name)
    except BaseException:
        sockets.discard_early()
        raise
    return bound


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when installed (plain asyncio otherwise)."""
    import asyncio  # here, not at the top: the server end binds its port before (bind_quic_early)

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    from ptproxy.ops.enumfast import drop_enum_getattr
    from ptproxy.ops.startup import pause_gc, resume_gc

    pause_gc()  # until the end serves (App.start): start-up makes no garbage worth collecting
    drop_enum_getattr()  # this process's interpreter is the end's: enum members read as fast as 3.12's
    try:
        return _main(argv)
    finally:
        resume_gc(freeze=False)  # no end started (--check, --version, an error); a no-op otherwise


def _main(argv: Sequence[str] | None) -> int:
    from ptproxy.ops.logs import setup_logging

    args = plain_command_line(argv) or build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "demo":
            from ptproxy.ops.demo import run_demo

            return run_loop(run_demo(args.http_port, args.quic_port, once=args.once))
        if args.command == "healthcheck":
            from ptproxy.ops.health import healthcheck

            return healthcheck(args.config)
        if not args.check:
            bind_quic_from_file(args.config)  # server end: before the configuration module
        from ptproxy.ops.config import load

        config = load(args.config)
        if args.check:
            from ptproxy.tunnel import load_material

            load_material(config)
            print("OK")
            return 0
        bind_quic_early(config)  # unless bound above
        bind_listeners_early(config)  # client end
        from ptproxy.ops.app import run

        return run_loop(run(config))
    except PtproxyError as exc:
        print(f"ptproxy: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # Binding a port, reaching a file: the OS message is the whole story.
        print(f"ptproxy: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if "ptproxy.ops.prebind" in sys.modules:
            sys.modules["ptproxy.ops.prebind"].close()  # bound by __main__, not taken
        if "ptproxy.sockets" in sys.modules:
            # What start-up bound early and no listener took (it failed before): closed.
            sys.modules["ptproxy.sockets"].discard_early()
