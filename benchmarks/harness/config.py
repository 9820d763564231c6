"""Config writers: the one ptproxy TOML writer (both ends), the nginx templates (the origin,
and the nginx mTLS pair that is ptproxy's conventional TCP peer) and the Caddy HTTP/3 pair's
Caddyfiles (ptproxy's HTTP/3 peer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptproxy.ops.devcerts import DemoPki
from tools.toml_writer import merge, to_toml

# -- ptproxy ------------------------------------------------------------------------------------


def ptproxy_configs(
    directory: Path,
    pki: DemoPki,
    *,
    http_port: int,
    quic_port: int,
    origin: str,
    client_addr: str = "127.0.0.1",
    server_addr: str = "127.0.0.1",
    transport: dict[str, Any] | None = None,
    client_extra: dict[str, Any] | str | None = None,
    server_extra: dict[str, Any] | str | None = None,
) -> tuple[Path, Path]:
    """Write ``client.toml`` and ``server.toml`` into ``directory`` for a pair: the client end
    listens on ``client_addr:http_port``, the server end on UDP ``server_addr:quic_port`` and
    forwards to ``origin`` (``host:port``). ``transport`` goes to both ends; ``*_extra`` (a dict
    or TOML text) is merged into one end. Returns (client path, server path)."""
    directory.mkdir(parents=True, exist_ok=True)
    both: dict[str, Any] = {"transport": dict(transport)} if transport else {}
    client = {
        "general": {"mode": "Client", "peer_hostname": pki.server_name, "connect_address": server_addr,
                    "quic_port": quic_port, "http_bind_address": f"{client_addr}:{http_port}"},
        "tls": {"ca": pki.ca, "cert": pki.client.cert, "key": pki.client.key},
        **both,
    }
    server = {
        "general": {"mode": "Server", "peer_hostname": pki.client_name, "bind_address": server_addr,
                    "quic_port": quic_port, "http_connect_address": origin},
        "tls": {"ca": pki.ca, "cert": pki.server.cert, "key": pki.server.key},
        **both,
    }
    paths = directory / "client.toml", directory / "server.toml"
    paths[0].write_text(to_toml(merge(client, client_extra)))
    paths[1].write_text(to_toml(merge(server, server_extra)))
    return paths


# -- nginx --------------------------------------------------------------------------------------

BODIES = {"hello": 5, "1k": 1024, "100k": 100 * 1024, "10m": 10 * 1024 * 1024}
UPLOAD_BYTES = 10 * 1024 * 1024


def nginx_conf(directory: Path, workers: int | str, http: str) -> str:
    """An nginx.conf run in the foreground with every file inside ``directory``, keep-alive
    limits raised so no connection is recycled during a measurement, and ``http`` (server and
    upstream blocks) inside its ``http {}``."""
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{http}}}
"""


def write_docroot(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello").write_bytes(b"hello")
    for name, size in BODIES.items():
        if name != "hello":
            (root / name).write_bytes(bytes(i % 251 for i in range(256)) * (size // 256))


def origin_conf(directory: Path, addr: str, port: int, workers: int | str = "auto") -> Path:
    """The nginx origin: static ``/hello`` (5 bytes), ``/1k``, ``/100k``, ``/10m``; ``/upload``
    reads the whole body (buffered in memory: request buffering on, ``client_body_buffer_size``
    large enough) before the internal subrequest to ``/_sink`` answers 200, so the response
    cannot overtake the upload. Writes the docroot and ``nginx.conf``; returns the latter."""
    root = directory / "www"
    write_docroot(root)
    conf = directory / "nginx.conf"
    conf.write_text(nginx_conf(directory, workers, f"""    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    server {{
        listen {addr}:{port} reuseport backlog=4096;
        root {root};
        location / {{ }}
        location = /upload {{
            client_max_body_size 0;
            client_body_buffer_size 16m;
            proxy_request_buffering on;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Body-Length $content_length;
            proxy_pass http://{addr}:{port}/_sink;
        }}
        location = /_sink {{
            allow {addr};
            deny all;
            return 200 "received $http_x_body_length\\n";
        }}
    }}
"""))
    return conf


_PROXY = """            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering off;
"""


def nginx_pair_confs(
    client_dir: Path,
    server_dir: Path,
    pki: DemoPki,
    *,
    client_addr: str,
    server_addr: str,
    http_port: int,
    tls_port: int,
    origin: str,
    workers: int = 1,
    listen_options: str = "",
) -> tuple[Path, Path]:
    """Two nginx: the client side takes HTTP on ``client_addr:http_port`` and ``proxy_pass``es
    over TLS 1.3 with a client certificate and upstream keepalive (``keepalive_timeout`` left at
    nginx's default, 60 s) to the server side on ``server_addr:tls_port`` (``ssl_verify_client
    on``), which forwards to ``origin`` with keepalive. Returns (client conf, server conf)."""
    listen = f" {listen_options}" if listen_options else ""
    server_dir.mkdir(parents=True, exist_ok=True)
    client_dir.mkdir(parents=True, exist_ok=True)
    server = server_dir / "nginx.conf"
    server.write_text(nginx_conf(server_dir, workers, f"""    upstream origin {{ server {origin}; keepalive 256; keepalive_requests 1000000; }}
    server {{
        listen {server_addr}:{tls_port} ssl{listen};
        ssl_certificate {pki.server.cert};
        ssl_certificate_key {pki.server.key};
        ssl_protocols TLSv1.3;
        ssl_client_certificate {pki.ca};
        ssl_verify_client on;
        ssl_session_cache shared:S:1m;
        client_max_body_size 0;
        location / {{
            proxy_pass http://origin;
{_PROXY}        }}
    }}
"""))
    client = client_dir / "nginx.conf"
    client.write_text(nginx_conf(client_dir, workers, f"""    upstream tunnel {{ server {server_addr}:{tls_port}; keepalive 256; keepalive_requests 1000000; }}
    server {{
        listen {client_addr}:{http_port}{listen};
        client_max_body_size 0;
        location / {{
            proxy_pass https://tunnel;
{_PROXY}            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate {pki.client.cert};
            proxy_ssl_certificate_key {pki.client.key};
            proxy_ssl_trusted_certificate {pki.ca};
            proxy_ssl_verify on;
            proxy_ssl_name {pki.server_name};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
    }}
"""))
    return client, server


# -- Caddy --------------------------------------------------------------------------------------


def caddy_pair_confs(
    client_dir: Path,
    server_dir: Path,
    pki: DemoPki,
    *,
    client_addr: str,
    server_addr: str,
    http_port: int,
    h3_port: int,
    origin: str,
    access_log: Path | None = None,
) -> tuple[Path, Path]:
    """Two Caddy (>= 2.8): the client side takes HTTP/1.1 on ``client_addr:http_port`` and
    ``reverse_proxy``s over HTTP/3 (``transport http { versions 3 }``, a client certificate,
    the test CA as ``tls_trust_pool``) to the server side on UDP ``server_addr:h3_port`` (TLS 1.3,
    client certificates required), which forwards to ``origin`` (``host:port``). Both run with
    the admin endpoint off and their storage inside their directory. ``access_log``: the server
    side logs (JSON, with the request's protocol) the requests that carry an ``X-Bench-Probe``
    header, and only those. Writes ``Caddyfile.client`` and ``Caddyfile.server`` (one directory
    may hold both); returns (client path, server path)."""
    server_dir.mkdir(parents=True, exist_ok=True)
    client_dir.mkdir(parents=True, exist_ok=True)
    probe_log = (f"""    @quiet not header X-Bench-Probe *
    log_skip @quiet
    log {{
        output file {access_log}
        format json
    }}
""" if access_log is not None else "")
    server = server_dir / "Caddyfile.server"
    server.write_text(f"""{{
    admin off
    auto_https off
    persist_config off
    storage file_system {server_dir}/server-data
    servers {{
        protocols h1 h2 h3
        strict_sni_host insecure_off
    }}
}}
https://:{h3_port} {{
    bind {server_addr}
    tls {pki.server.cert} {pki.server.key} {{
        protocols tls1.3
        client_auth {{
            mode require_and_verify
            trust_pool file {pki.ca}
        }}
    }}
{probe_log}    reverse_proxy {origin}
}}
""")
    client = client_dir / "Caddyfile.client"
    client.write_text(f"""{{
    admin off
    auto_https off
    persist_config off
    storage file_system {client_dir}/client-data
}}
http://:{http_port} {{
    bind {client_addr}
    reverse_proxy https://{server_addr}:{h3_port} {{
        transport http {{
            versions 3
            tls_server_name {pki.server_name}
            tls_client_auth {pki.client.cert} {pki.client.key}
            tls_trust_pool file {pki.ca}
        }}
    }}
}}
""")
    return client, server
