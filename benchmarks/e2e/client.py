"""The Python load client (run as ``python -m benchmarks.e2e.client``, inside namespace a on an
emulated link): sequential requests over one keep-alive connection, big downloads and uploads.
Prints one JSON object on stdout.

    latency  HOST PORT PATH --n N [--warmup W] [--probe]
    download HOST PORT PATH --n N
    upload   HOST PORT PATH --bytes B --n N
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

CHUNK = 256 * 1024


class Conn:
    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            raise ConnectionError("connection closed by peer")
        self.buf += data

    def request(self, method: str, path: str, body_len: int = 0, extra: str = "") -> tuple[int, int, dict[str, str]]:
        """Send one request (a body of ``body_len`` bytes if any); return (status, body bytes, headers)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: ptproxy-bench\r\n{extra}"
        if method in ("POST", "PUT"):
            head += f"Content-Length: {body_len}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        if body_len:
            block = b"x" * CHUNK
            left = body_len
            while left:
                n = min(left, CHUNK)
                self.sock.sendall(block[:n])
                left -= n
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        if "content-length" in headers:
            n = int(headers["content-length"])
            self._skip(n)
            return status, n, headers
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return status, self._chunked(), headers
        return status, 0, headers

    def _skip(self, n: int) -> None:
        """Consume exactly ``n`` body bytes (buffered first, then straight from the socket)."""
        take = min(n, len(self.buf))
        self.buf = self.buf[take:]
        n -= take
        scratch = memoryview(bytearray(CHUNK))
        while n:
            got = self.sock.recv_into(scratch, min(n, CHUNK))
            if not got:
                raise ConnectionError("connection closed mid-body")
            n -= got

    def _chunked(self) -> int:
        total = 0
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            self._skip(size + 2)
            total += size
            if size == 0:
                return total  # (trailers not expected)

    def close(self) -> None:
        self.sock.close()


def latency(a: argparse.Namespace) -> dict[str, object]:
    extra = "X-Bench-Probe: 1\r\n" if a.probe else ""
    t0 = time.perf_counter()
    conn = Conn(a.host, a.port)
    out: list[float] = []
    errors = 0
    hop_proto = None
    try:
        for i in range(a.warmup + a.n):
            t = time.perf_counter()
            status, _, headers = conn.request("GET", a.path, extra=extra)
            dt = (time.perf_counter() - (t0 if (a.probe and i == 0) else t)) * 1000
            if status != 200:
                errors += 1
            hop_proto = headers.get("x-hop-proto", hop_proto)
            if i >= a.warmup:
                out.append(dt)
    finally:
        conn.close()
    return {"latencies_ms": out, "errors": errors, "hop_proto": hop_proto}


def transfer(a: argparse.Namespace, upload: bool) -> dict[str, object]:
    conn = Conn(a.host, a.port)
    secs: list[float] = []
    sizes: list[int] = []
    errors = 0
    try:
        for _ in range(a.n):
            t = time.perf_counter()
            if upload:
                status, _, _ = conn.request("POST", a.path, body_len=a.bytes)
                size = a.bytes
            else:
                status, size, _ = conn.request("GET", a.path)
            secs.append(time.perf_counter() - t)
            sizes.append(size)
            errors += status != 200
    finally:
        conn.close()
    return {"seconds": secs, "bytes": sizes, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e.client")
    p.add_argument("mode", choices=["latency", "download", "upload"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("path")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--bytes", type=int, default=10 * 1024 * 1024)
    p.add_argument("--probe", action="store_true", help="count connect time; send X-Bench-Probe")
    a = p.parse_args(argv)
    try:
        if a.mode == "latency":
            res = latency(a)
        else:
            res = transfer(a, upload=a.mode == "upload")
    except (OSError, ValueError, IndexError) as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(res, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
