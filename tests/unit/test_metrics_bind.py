"""The [metrics] listener's socket: bound by hand for an IP literal (ops/health.py bind_literal), as
``asyncio.start_server(host, port, reuse_address=True)`` binds it (options, error text), and by the
loop for anything else; served the same either way, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops.health import MetricsServer, bind_literal
from ptproxy.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _runners() -> list[Any]:
    runners: list[Any] = [pytest.param(asyncio.run, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return runners
    return [*runners, pytest.param(uvloop.run, id="uvloop")]


RUNNERS = _runners()
HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6"))]


@pytest.mark.parametrize("host", HOSTS)
def test_a_literal_is_bound_listening_with_the_options_start_server_sets(host: str) -> None:
    sock = bind_literal(host, 0)
    assert sock is not None
    with sock:
        assert sock.getsockname()[0] == host and sock.getsockname()[1] > 0
        assert sock.type == socket.SOCK_STREAM and not sock.getblocking()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        if sock.family == socket.AF_INET6:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        with socket.create_connection((host, sock.getsockname()[1]), timeout=2):
            pass


@pytest.mark.parametrize("host", ["localhost", "metrics.example", "fe80::1%lo", "", "1.2.3", "::1::"])
def test_anything_but_a_plain_literal_is_left_to_the_loop(host: str) -> None:
    assert bind_literal(host, 0) is None


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("host", HOSTS)
def test_a_port_in_use_gives_the_error_start_server_gives(run: Callable[[Coroutine[Any, Any, Any]], Any],
                                                          host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as busy:
        busy.bind((host, 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def loops_own() -> OSError:
            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.close()

            with pytest.raises(OSError) as info:
                await asyncio.start_server(handle, host, port, reuse_address=True)
            return info.value

        expected = run(loops_own())
        with pytest.raises(OSError) as ours:
            bind_literal(host, port)
        assert (ours.value.errno, str(ours.value)) == (expected.errno, str(expected))
        assert "address already in use" in str(ours.value)


def _serve_and_probe(host: str) -> tuple[int, bytes, str]:
    async def main() -> tuple[int, bytes, str]:
        server = MetricsServer((host, 0), Metrics("client"), lambda: (True, "up"))
        await server.start()
        try:
            port = server.address[1]
            reader, writer = await asyncio.open_connection(server.address[0], port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return port, answer, server.address[0]
        finally:
            await server.close()

    return asyncio.run(main())


@pytest.mark.parametrize("host", [*HOSTS, "localhost"])
def test_the_metrics_server_answers_whether_bound_by_hand_or_by_the_loop(host: str) -> None:
    port, answer, bound = _serve_and_probe(host)
    assert port > 0 and answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nup\n")
    if host != "localhost":
        assert bound == host


def test_a_literal_metrics_address_is_bound_without_getaddrinfo_or_idna(tmp_path: Path) -> None:
    """On uvloop a numeric host given to start_server goes through getaddrinfo (libuv's resolver
    threads) after being IDNA-encoded (encodings.idna imported): neither happens for a literal."""
    code = """
        import asyncio, socket, sys, threading
        import uvloop
        from ptproxy.ops.health import MetricsServer
        from ptproxy.ops.metrics import Metrics
        calls = []
        real = socket.getaddrinfo
        socket.getaddrinfo = lambda *a, **k: calls.append(a) or real(*a, **k)
        async def main():
            s = MetricsServer(("127.0.0.1", 0), Metrics("server"), lambda: (True, "ok"))
            await s.start()
            await s.close()
        before = "encodings.idna" in sys.modules
        uvloop.run(main())
        print(before, "encodings.idna" in sys.modules, threading.active_count(), calls)
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "1", "[]"], out.stdout
