"""Command line: ``ptproxy [-c PATH] [--check]``, ``ptproxy demo``, ``ptproxy --version``.

Expected failures print one line (``ptproxy: error: …``) and exit 1, never a traceback.

Start-up order: the server end binds its UDP port (:func:`bind_quic_early`) right after reading
the configuration, before asyncio, aioquic, cryptography and the TLS set-up are imported (~100-200
ms). A client that dials while the rest of start-up runs (a restart) then has its handshake wait in
the socket's receive buffer, answered when the endpoint first reads, instead of drawing ICMP port
unreachable and sending it again later.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ptproxy._version import __version__
from ptproxy.errors import PtproxyError

if TYPE_CHECKING:
    from ptproxy.ops.config import Config

__all__ = ["main", "build_parser", "version_text", "run_loop", "bind_quic_early"]

DEFAULT_CONFIG = "/etc/ptproxy/config.toml"
logger = logging.getLogger("ptproxy")
# ops/handoff.py's ENV (not imported here: that module imports asyncio, which the early bind
# comes before; tests/unit check the two agree).
HANDOFF_ENV = "PTPROXY_HANDOFF"


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` and exit (argparse's own action needs the text
    when the parser is built)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


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
    from ptproxy.ops.logs import LOG_LEVELS

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


def bind_quic_early(config: Config, environ: Mapping[str, str] = os.environ) -> socket.socket | None:
    """Server end: bind the QUIC UDP port now, and register the socket as the one passed as
    ``quic`` (ptproxy/sockets.py), which the listener takes as it takes systemd's; it applies the
    buffer sizes and Don't Fragment then, as to any passed socket (ptproxy/tunnel/udp.py).

    The address family is the one ``open_udp_socket`` picks for a server end (IPv6 dual-stack for
    an IPv6 address). Nothing is bound (None) for a client end, when a socket is being passed to
    this process (``LISTEN_FDS``, a hand-off), or when binding fails: the listener then binds as
    before and reports the error where it always did (after the certificates are checked)."""
    general = config.general
    if general.mode != "Server" or "LISTEN_FDS" in environ or HANDOFF_ENV in environ:
        return None
    from ptproxy import sockets

    ip = ipaddress.ip_address(general.bind_address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind((general.bind_address, general.quic_port))
    except OSError as exc:
        sock.close()
        logger.debug("binding the QUIC port early failed (%s); the listener binds it", exc)
        return None
    sockets.adopt("quic", sock)
    return sock


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
    from ptproxy.ops.startup import pause_gc, resume_gc

    pause_gc()  # until the end serves (App.start): start-up makes no garbage worth collecting
    try:
        return _main(argv)
    finally:
        resume_gc(freeze=False)  # no end started (--check, --version, an error); a no-op otherwise


def _main(argv: Sequence[str] | None) -> int:
    from ptproxy.ops.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "demo":
            from ptproxy.ops.demo import run_demo

            return run_loop(run_demo(args.http_port, args.quic_port, once=args.once))
        if args.command == "healthcheck":
            from ptproxy.ops.health import healthcheck

            return healthcheck(args.config)
        from ptproxy.ops.config import load

        config = load(args.config)
        if args.check:
            from ptproxy.tunnel import load_material

            load_material(config)
            print("OK")
            return 0
        bind_quic_early(config)
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
