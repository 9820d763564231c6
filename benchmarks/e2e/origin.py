"""The origin: an nginx instance of its own serving fixed bodies and an upload sink.

``/hello`` (5 bytes), ``/1k``, ``/100k``, ``/10m`` are static files. ``/upload`` reads the whole
request body before answering: nginx buffers it in memory (``client_body_buffer_size`` large
enough, request buffering on) and only then makes the internal subrequest to ``/_sink``, which
answers ``200`` with the declared length. So the response cannot overtake the upload.
"""

from __future__ import annotations

from pathlib import Path

BODIES = {"hello": 5, "1k": 1024, "100k": 100 * 1024, "10m": 10 * 1024 * 1024}
UPLOAD_BYTES = 10 * 1024 * 1024


def write_docroot(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello").write_bytes(b"hello")
    for name, size in BODIES.items():
        if name != "hello":
            (root / name).write_bytes(bytes(i % 251 for i in range(256)) * (size // 256))


def nginx_common(directory: Path, workers: int | str) -> str:
    """The top of every nginx.conf we write (no daemon, files inside ``directory``)."""
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
"""


def nginx_http_common(directory: Path) -> str:
    return f"""    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
"""


def origin_conf(directory: Path, addr: str, port: int) -> Path:
    root = directory / "www"
    write_docroot(root)
    conf = directory / "nginx.conf"
    conf.write_text(
        nginx_common(directory, "auto")
        + f"""http {{
{nginx_http_common(directory)}
    default_type application/octet-stream;
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
}}
"""
    )
    return conf
