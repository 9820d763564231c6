"""Start-up: what an end imports before it serves, and when, and what it does first (each case in
a fresh interpreter, as tests/unit/test_deferred_imports.py: this test process has imported
everything already)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fresh import run_fresh


def run(code: str, tmp_path: Path) -> str:
    return run_fresh(code, tmp_path, drop_env=("PROMETHEUS_DISABLE_CREATED_SERIES",))


def test_metrics_import_prometheus_client_at_the_first_scrape_and_render_as_it_does(tmp_path: Path) -> None:
    out = run(
        """
        import re, sys
        from ptproxy.ops import health  # the metrics server's module
        from ptproxy.ops.metrics import DURATION_BUCKETS, WAIT_BUCKETS, Metrics

        ops = [(200, 0.001), (200, 0.005), (404, 0.0101), (200, 100.0), (200, 60.0), (502, 0.0)]
        m = Metrics("server")
        for status, seconds in ops:
            m.request_done("server", status, seconds)
            m.route_done("default", status, seconds)
        m.waited("default", 0.07)
        m.tcp_opened("r"); m.tcp_closed("r"); m.tcp_bytes("r", "to_origin", 10)
        print("before scrape", "prometheus_client" in sys.modules)
        ours = m.render().decode()

        # The same updates on prometheus_client's own types: the same text, but for the times.
        from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
        reg = CollectorRegistry()
        requests = Counter("ptproxy_requests", "HTTP requests answered, by end and status code.",
                           ["side", "status"], registry=reg)
        duration = Histogram("ptproxy_request_duration_seconds",
                             "Time from request head to the end of the response, by end.", ["side"],
                             buckets=DURATION_BUCKETS, registry=reg)
        route = Counter("ptproxy_route_requests",
                        "Requests answered by the server end, by route and status code.",
                        ["route", "status"], registry=reg)
        route_duration = Histogram(
            "ptproxy_route_request_duration_seconds",
            "Time from request head to the end of the response at the server end, by route.",
            ["route"], buckets=DURATION_BUCKETS, registry=reg)
        wait = Histogram("ptproxy_route_pending_wait_seconds",
                         "Time requests waited in a route's pending queue for an origin to come UP.",
                         ["route"], buckets=WAIT_BUCKETS, registry=reg)
        for status, seconds in ops:
            requests.labels("server", str(status)).inc(); duration.labels("server").observe(seconds)
            route.labels("default", str(status)).inc(); route_duration.labels("default").observe(seconds)
        wait.labels("default").observe(0.07)
        theirs = generate_latest(reg).decode()

        def blocks(text):
            text = re.sub(r"(_created\\{[^}]*\\}) \\S+", r"\\1 T", text)
            return {b.split("\\n", 1)[0]: b for b in re.split(r"(?m)^(?=# HELP )", text) if b}

        mine, ref = blocks(ours), blocks(theirs)
        print("same", all(mine[k] == ref[k] for k in ref), len(ref))
        print("tcp", "ptproxy_tcp_bytes_total{direction=\\"to_origin\\",route=\\"r\\"} 10.0" in ours)
        """,
        tmp_path,
    )
    assert out.split("\n")[:3] == ["before scrape False", "same True 10", "tcp True"], out


def test_the_collector_is_paused_while_an_end_starts_and_resumed_frozen_once_it_serves(tmp_path: Path) -> None:
    out = run(
        """
        import asyncio, gc, socket
        from pathlib import Path
        from ptproxy.ops import cli
        from ptproxy.ops.devcerts import make_demo_pki

        pki = make_demo_pki(Path("."))
        ports = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1]); s.close()
        Path("server.toml").write_text(f'''
        [general]
        mode = "Server"
        peer_hostname = "{pki.client_name}"
        bind_address = "127.0.0.1"
        quic_port = {ports[0]}
        http_connect_address = "127.0.0.1:9"
        [tls]
        ca = "{pki.ca}"
        cert = "{pki.server.cert}"
        key = "{pki.server.key}"
        '''.replace("\\n        ", "\\n"))

        seen = []
        real_start = cli.run_loop

        def run_loop(coro):  # look at the collector inside the process's loop, then stop
            from ptproxy.ops.app import App
            from ptproxy.ops.config import load

            async def probe():
                seen.append(("while starting", gc.isenabled()))
                coro.close()
                app = App(load("server.toml"))
                await app.start()
                seen.append(("serving", gc.isenabled(), gc.get_freeze_count() > 0))
                await app.shutdown()
                return 0

            return real_start(probe())

        cli.run_loop = run_loop
        print(cli.main(["-c", "server.toml"]), seen, gc.isenabled())
        print(cli.main(["-c", "server.toml", "--check"]), gc.isenabled())
        """,
        tmp_path,
    )
    assert out.split("\n")[:2] == [
        "0 [('while starting', False), ('serving', True, True)] True",
        "OK",
    ], out
    assert out.split("\n")[2] == "0 True", out


def test_a_client_end_sends_its_initial_before_it_sets_up_its_listeners(tmp_path: Path) -> None:
    out = run(
        """
        import asyncio, socket
        from pathlib import Path
        from ptproxy.ops.app import App
        from ptproxy.ops.config import load
        from ptproxy.ops.devcerts import make_demo_pki
        from ptproxy.client import listener

        pki = make_demo_pki(Path("."))
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a server end that never answers
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        probe = socket.socket(); probe.bind(("127.0.0.1", 0)); http_port = probe.getsockname()[1]; probe.close()
        Path("client.toml").write_text(f'''
        [general]
        mode = "Client"
        peer_hostname = "{pki.server_name}"
        connect_address = "127.0.0.1"
        quic_port = {silent.getsockname()[1]}
        http_bind_address = "127.0.0.1:{http_port}"
        [tls]
        ca = "{pki.ca}"
        cert = "{pki.client.cert}"
        key = "{pki.client.key}"
        [system]
        wait_for_first_attempt = false
        '''.replace("\\n        ", "\\n"))

        def initial_sent():
            try:
                return len(silent.recv(2048, socket.MSG_PEEK)) >= 1200
            except BlockingIOError:
                return False

        seen = []
        real_start = listener.Frontend.start

        async def start(self):
            seen.append(initial_sent())
            await real_start(self)

        listener.Frontend.start = start

        async def main():
            app = App(load("client.toml"))
            await app.start()
            print("initial before the listener", seen)
            await app.shutdown()

        asyncio.run(main())
        """,
        tmp_path,
    )
    assert out.split("\n")[0] == "initial before the listener [True]", out


def test_python_m_ptproxy_pauses_the_collector_before_the_command_line_is_imported(tmp_path: Path) -> None:
    out = run(
        """
        import gc, runpy, sys
        seen = []
        sys.addaudithook(lambda event, args: seen.append(gc.isenabled())
                         if event == "import" and args[0] == "ptproxy.ops.cli" else None)
        sys.argv = ["ptproxy", "--version"]
        try:
            runpy.run_module("ptproxy", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            print("exit", exc.code, "collector while importing the command line", seen[:1], "after", gc.isenabled())
        """,
        tmp_path,
    )
    assert out.strip().split("\n")[-1] == "exit 0 collector while importing the command line [False] after True", out


def test_a_serving_server_end_has_done_its_first_handshakes_one_time_work(tmp_path: Path) -> None:
    # App.start calls warm_first_handshake once the server end serves: the imports and the first
    # key generation its first handshake would otherwise do while the client waits for its answer.
    out = run(
        """
        import sys
        from ptproxy.tunnel import warm_first_handshake
        lazy = ("ptproxy.tunnel.cc.controllers", "cryptography.hazmat.backends.openssl.backend")
        warm_first_handshake()
        print([name in sys.modules for name in lazy])
        warm_first_handshake()  # again: nothing more to do, no error
        """,
        tmp_path,
    )
    assert out.split("\n")[0] == "[True, True]", out
