"""The soak runner: origin + server end + client end as real processes, mixed load, restarts.

Load: ``concurrency`` workers, each on its own keep-alive connection to the client end, loop over
a random mix of

- downloads of ``/bytes/<n>`` (Content-Length) and ``/bytes/<n>?chunked=1`` (64 KiB chunks),
  small (0..64 KiB) or large (up to ``large_max``), checked against the origin's pattern hash;
- uploads to ``/sink`` with Content-Length or chunked (random chunk sizes), random bytes, checked
  against the hash and length the origin reports.

A message that arrived whole (its framing completed) with the wrong bytes is **corrupted**: that
must never happen. Everything else that is not a 200 is a failure counted by kind (``503``,
``502``, ``truncated`` = early close, ``connect``, ``timeout``...), and marked as during a restart
window (stop of the server end until 5 s after the tunnel is ready again) or not.

RSS and fd counts of both ends are sampled with the load paused (connections closed, 2 s idle):
once after ``warmup`` seconds and once at the end; plus every 10 s under load for the maxima.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ORIGIN_SCRIPT = ROOT / "tests" / "integration" / "origin_server.py"

SMALL_MAX = 64 * 1024
REQUEST_TIMEOUT = 120.0
RESTART_GRACE = 5.0


@dataclass
class SoakOptions:
    minutes: float = 10.0
    restart_every: float = 180.0
    restart_signal: str = "INT"
    concurrency: int = 12
    warmup: float = 60.0
    large_max: int = 8 << 20
    seed: int | None = None
    workdir: Path | None = None


# -- the origin's pattern (same as tests/integration/origin_server.py) --------------------------


def _origin_module() -> Any:
    sys.path.insert(0, str(ORIGIN_SCRIPT.parent))
    try:
        import origin_server  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return origin_server


@functools.lru_cache(maxsize=256)
def pattern_sha(n: int) -> str:
    return _origin_module().pattern_sha256(n)


# -- processes ----------------------------------------------------------------------------------


def _free_port(kind: int) -> int:
    import socket

    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(doc: dict[str, dict[str, Any]]) -> str:
    out = []
    for table, fields in doc.items():
        out.append(f"[{table}]")
        for k, v in fields.items():
            out.append(f"{k} = {json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}")
        out.append("")
    return "\n".join(out)


def vmrss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


class Proc:
    def __init__(self, name: str, cmd: list[str], workdir: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.generation}.log"

    def start(self) -> None:
        self.generation += 1
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        with open(self.log_path, "wb") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        return "".join(
            (self.workdir / f"{self.name}.{g}.log").read_text(errors="replace")
            for g in range(1, self.generation + 1)
            if (self.workdir / f"{self.name}.{g}.log").exists()
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sample(self) -> dict[str, int]:
        return {"rss_kib": vmrss_kib(self.pid), "fds": fd_count(self.pid), "pid": self.pid}


async def _wait_log(proc: Proc, text: str, count: int, timeout: float, all_logs: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proc.all_logs() if all_logs else proc.log()
        if log.count(text) >= count:
            return True
        await asyncio.sleep(0.1)
    return False


# -- a minimal async HTTP/1.1 client ------------------------------------------------------------


class Failure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> None:
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
            except OSError as exc:
                raise Failure("connect", str(exc)) from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(
        self, method: str, target: str, body: bytes | None, chunks: list[int] | None
    ) -> tuple[int, dict[str, str], bytes | None, str, int, bool]:
        """Send one request; returns (status, headers, json body or None, sha256, length, keep)."""
        await self.ensure()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: soak\r\n"
        if body is not None:
            head += "Transfer-Encoding: chunked\r\n" if chunks is not None else f"Content-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n")
        if body is not None:
            if chunks is None:
                for i in range(0, len(body), 256 * 1024):
                    self.writer.write(body[i:i + 256 * 1024])
                    await self.writer.drain()
            else:
                pos = 0
                for size in chunks:
                    self.writer.write(b"%x\r\n" % size + body[pos:pos + size] + b"\r\n")
                    pos += size
                    await self.writer.drain()
                self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        return await self._response(method)

    async def _response(self, method: str) -> tuple[int, dict[str, str], bytes | None, str, int, bool]:
        r = self.reader
        assert r is not None
        try:
            raw = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise Failure("closed-before-response" if not exc.partial else "truncated-head") from None
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                n, _, v = line.partition(":")
                headers[n.strip().lower()] = v.strip()
        keep = "close" not in headers.get("connection", "").lower()
        sha = hashlib.sha256()
        length = 0
        collect = headers.get("content-type", "").startswith(("application/json", "text/plain"))
        kept: list[bytes] = []

        def take(data: bytes) -> None:
            nonlocal length
            sha.update(data)
            length += len(data)
            if collect:
                kept.append(data)

        try:
            if method == "HEAD" or status in (204, 304) or status < 200:
                pass
            elif "transfer-encoding" in headers:
                while True:
                    line = await r.readuntil(b"\r\n")
                    size = int(line.split(b";")[0], 16)
                    if size == 0:
                        while await r.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    take(await r.readexactly(size))
                    if await r.readexactly(2) != b"\r\n":
                        raise Failure("corrupted", "chunk not followed by CRLF")
            elif "content-length" in headers:
                left = int(headers["content-length"])
                while left > 0:
                    data = await r.read(min(left, 256 * 1024))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    take(data)
                    left -= len(data)
            else:
                while data := await r.read(256 * 1024):
                    take(data)
                keep = False
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Failure("truncated", f"status {status}: {exc}") from None
        doc = b"".join(kept) if collect else None
        return status, headers, doc, sha.hexdigest(), length, keep


# -- load ---------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self.by_op: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.failures_outside_restarts: dict[str, int] = {}
        self.corrupted: list[str] = []
        self.examples: list[str] = []

    def fail(self, kind: str, detail: str, in_restart: bool) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if not in_restart:
            self.failures_outside_restarts[kind] = self.failures_outside_restarts.get(kind, 0) + 1
            if len(self.examples) < 20:
                self.examples.append(f"{kind}: {detail}")


class Soak:
    def __init__(self, opts: SoakOptions, port: int) -> None:
        self.opts = opts
        self.port = port
        self.rng = random.Random(opts.seed)
        self.stats = Stats()
        self.stop = False
        self.paused = asyncio.Event()
        self.idle_workers = 0
        # Restart windows: [start, end) monotonic; end None while the restart is under way.
        self.windows: list[list[float | None]] = []
        self.large_sizes = sorted({self.rng.randint(SMALL_MAX, opts.large_max) for _ in range(6)} | {opts.large_max})

    def in_restart(self, started: float, ended: float) -> bool:
        for start, end in self.windows:
            assert start is not None
            if ended >= start and (end is None or started <= end + RESTART_GRACE):
                return True
        return False

    def pick(self, rng: random.Random) -> tuple[str, str, bytes | None, list[int] | None, int]:
        large = rng.random() < 0.15
        n = rng.choice(self.large_sizes) if large else rng.randint(0, SMALL_MAX)
        op = rng.choice(["get-length", "get-chunked", "post-length", "post-chunked"])
        if op.startswith("get"):
            target = f"/bytes/{n}" + ("?chunked=1" if op == "get-chunked" else "")
            return op, target, None, None, n
        body = rng.randbytes(n)
        chunks = None
        if op == "post-chunked":
            chunks, left = [], n
            while left > 0:
                size = min(left, rng.choice([1, 7, 100, 4096, 65536, 300_000]))
                chunks.append(size)
                left -= size
        return op, "/sink", body, chunks, n

    async def worker(self, wid: int) -> None:
        rng = random.Random(self.rng.random())
        conn = Conn(self.port)
        while not self.stop:
            if self.paused.is_set():
                conn.close()
                self.idle_workers += 1
                while self.paused.is_set() and not self.stop:
                    await asyncio.sleep(0.05)
                self.idle_workers -= 1
                continue
            op, target, body, chunks, n = self.pick(rng)
            started = time.monotonic()
            self.stats.requests += 1
            self.stats.by_op[op] = self.stats.by_op.get(op, 0) + 1
            try:
                status, headers, doc, sha, length, keep = await asyncio.wait_for(
                    conn.exchange("GET" if body is None else "POST", target, body, chunks), REQUEST_TIMEOUT
                )
            except Failure as f:
                conn.close()
                self.stats.fail(f.kind, f"{op} {n}: {f.detail}", self.in_restart(started, time.monotonic()))
                if f.kind == "connect":
                    await asyncio.sleep(0.1)
                continue
            except asyncio.TimeoutError:
                conn.close()
                self.stats.fail("timeout", f"{op} {n}", self.in_restart(started, time.monotonic()))
                continue
            except OSError as exc:
                conn.close()
                self.stats.fail("socket", f"{op} {n}: {exc}", self.in_restart(started, time.monotonic()))
                continue
            if not keep:
                conn.close()
            ended = time.monotonic()
            if status != 200:
                self.stats.fail(str(status), f"{op} {n}", self.in_restart(started, ended))
                if status == 503:
                    await asyncio.sleep(0.05)
                continue
            if body is None:
                expected = pattern_sha(n)
                if length != n or sha != expected:
                    self.stats.corrupted.append(f"{op} {target}: got {length} bytes sha {sha[:16]}")
                    continue
                self.stats.bytes_down += length
            else:
                try:
                    got = json.loads(doc or b"")
                except ValueError:
                    self.stats.corrupted.append(f"{op} {n}: unreadable origin answer {doc[:100]!r}")
                    continue
                if got.get("body_length") != n or got.get("body_sha256") != hashlib.sha256(body).hexdigest():
                    self.stats.corrupted.append(f"{op} {n} chunks={len(chunks or [])}: origin saw {got}")
                    continue
                self.stats.bytes_up += n
            self.stats.ok += 1
        conn.close()

    async def quiesce(self, seconds: float = 2.0) -> None:
        self.paused.set()
        deadline = time.monotonic() + REQUEST_TIMEOUT + 5
        while self.idle_workers < self.opts.concurrency and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(seconds)

    def resume(self) -> None:
        self.paused.clear()


async def run_soak(opts: SoakOptions) -> dict[str, Any]:
    import socket

    from ptproxy.ops.devcerts import make_demo_pki

    keep_dir = opts.workdir is not None
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="ptproxy-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_demo_pki(workdir / "pki")
    http_port = _free_port(socket.SOCK_STREAM)
    quic_port = _free_port(socket.SOCK_DGRAM)

    origin = subprocess.Popen([sys.executable, str(ORIGIN_SCRIPT), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=open(workdir / "origin.log", "wb"), stdin=subprocess.DEVNULL)
    assert origin.stdout is not None
    line = origin.stdout.readline().decode()
    if not line.startswith("listening on "):
        origin.kill()
        raise RuntimeError(f"origin did not start: {line!r}")
    origin_port = int(line.split()[-1])
    transport = {"max_idle_timeout": 5000, "keep_alive_interval": 1000}
    (workdir / "client.toml").write_text(_toml({
        "general": {"mode": "Client", "peer_hostname": pki.server_name, "connect_address": "127.0.0.1",
                    "quic_port": quic_port, "http_bind_address": f"127.0.0.1:{http_port}"},
        "tls": {"ca": str(pki.ca), "cert": str(pki.client.cert), "key": str(pki.client.key)},
        "transport": transport,
        "system": {"connect_interval": 300},
    }))
    (workdir / "server.toml").write_text(_toml({
        "general": {"mode": "Server", "peer_hostname": pki.client_name, "bind_address": "127.0.0.1",
                    "quic_port": quic_port, "http_connect_address": f"127.0.0.1:{origin_port}"},
        "tls": {"ca": str(pki.ca), "cert": str(pki.server.cert), "key": str(pki.server.key)},
        "transport": transport,
    }))
    server = Proc("server", [sys.executable, "-m", "ptproxy", "-c", str(workdir / "server.toml")], workdir)
    client = Proc("client", [sys.executable, "-m", "ptproxy", "-c", str(workdir / "client.toml")], workdir)
    report: dict[str, Any] = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}}
    soak = Soak(opts, http_port)
    restarts: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    try:
        server.start()
        if not await _wait_log(server, "started endpoint at", 1, 20):
            raise RuntimeError(f"server end did not start:\n{server.log()[-2000:]}")
        client.start()
        if not await _wait_log(client, "tunnel ready", 1, 20):
            raise RuntimeError(f"no tunnel:\n{client.log()[-2000:]}")
        started = time.monotonic()
        end_at = started + opts.minutes * 60
        workers = [asyncio.create_task(soak.worker(i)) for i in range(opts.concurrency)]

        # Warm-up, then the baseline with the load paused.
        await asyncio.sleep(min(opts.warmup, opts.minutes * 60 / 4))
        await soak.quiesce()
        baseline = {"client": client.sample(), "server": server.sample(), "t": round(time.monotonic() - started, 1)}
        soak.resume()
        next_restart = time.monotonic() + opts.restart_every if opts.restart_every > 0 else float("inf")
        next_sample = time.monotonic() + 10
        ready_count = 1
        while time.monotonic() < end_at:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - started, 1), "client": client.sample(), "server": server.sample()})
                next_sample = now + 10
            if now >= next_restart and end_at - now > 30:
                window: list[float | None] = [now, None]
                soak.windows.append(window)
                before = server.sample()
                sig = getattr(signal, f"SIG{opts.restart_signal}")
                t0 = time.monotonic()
                code = await asyncio.get_running_loop().run_in_executor(None, server.stop, sig, 30.0)
                stopped = time.monotonic() - t0
                server.start()
                ready_count += 1
                ok = await _wait_log(client, "tunnel ready", ready_count, 30, all_logs=True)
                window[1] = time.monotonic()
                restarts.append({
                    "t": round(now - started, 1), "server_before": before, "exit": code,
                    "stop_seconds": round(stopped, 2), "ready": ok,
                    "down_seconds": round(window[1] - now, 2),
                })
                next_restart = time.monotonic() + opts.restart_every
        soak.stop = True
        await asyncio.gather(*workers, return_exceptions=True)
        await asyncio.sleep(3)
        final = {"client": client.sample(), "server": server.sample(), "t": round(time.monotonic() - started, 1)}
        duration = time.monotonic() - started
    finally:
        soak.stop = True
        c_code = client.stop()
        s_code = server.stop()
        origin.terminate()
        try:
            origin.wait(5)
        except subprocess.TimeoutExpired:
            origin.kill()
    logs = client.all_logs() + server.all_logs()
    defects = [m for m in ("Traceback", "never retrieved", "Exception in callback") if m in logs]
    st = soak.stats
    c_rss0, c_rss1 = baseline["client"]["rss_kib"], final["client"]["rss_kib"]
    c_fd0, c_fd1 = baseline["client"]["fds"], final["client"]["fds"]
    s_rss0, s_rss1 = baseline["server"]["rss_kib"], final["server"]["rss_kib"]
    s_fd0, s_fd1 = baseline["server"]["fds"], final["server"]["fds"]
    verdict = {
        "zero_corrupted": not st.corrupted,
        "no_unexpected_failures": not st.failures_outside_restarts,
        "client_rss_within_10pct": c_rss1 <= c_rss0 * 1.10,
        "server_rss_within_10pct": s_rss1 <= s_rss0 * 1.10,
        "client_no_fd_growth": c_fd1 <= c_fd0,
        "server_no_fd_growth": s_fd1 <= s_fd0,
        "no_defects_in_logs": not defects,
        "clean_exit": c_code == 0 and s_code == 0,
    }
    verdict["ok"] = all(verdict.values())
    report.update({
        "duration_s": round(duration, 1),
        "requests": st.requests,
        "ok": st.ok,
        "by_op": st.by_op,
        "bytes_down": st.bytes_down,
        "bytes_up": st.bytes_up,
        "failures": st.failures,
        "failures_outside_restarts": st.failures_outside_restarts,
        "failure_examples": st.examples,
        "corrupted": len(st.corrupted),
        "corrupted_examples": st.corrupted[:20],
        "restarts": restarts,
        "baseline": baseline,
        "final": final,
        "samples": samples,
        "max_rss_kib": {
            "client": max([s["client"]["rss_kib"] for s in samples] + [c_rss0]),
            "server": max([s["server"]["rss_kib"] for s in samples] + [s_rss0]),
        },
        "log_defects": defects,
        "exit_codes": {"client": c_code, "server": s_code},
        "workdir": str(workdir) if keep_dir else None,
        "verdict": verdict,
    })
    if not keep_dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def format_report(r: dict[str, Any]) -> str:
    b, f = r["baseline"], r["final"]

    def end(name: str) -> str:
        return (f"  {name:6} RSS {b[name]['rss_kib'] / 1024:7.1f} MiB -> {f[name]['rss_kib'] / 1024:7.1f} MiB"
                f" (max under load {r['max_rss_kib'][name] / 1024:.1f} MiB), fds {b[name]['fds']} -> {f[name]['fds']}")

    lines = [
        f"ptproxy soak: {r['duration_s'] / 60:.1f} min, {r['requests']} requests, {r['ok']} ok, "
        f"{r['bytes_down'] / 1e9:.2f} GB down, {r['bytes_up'] / 1e9:.2f} GB up",
        f"  mix: {r['by_op']}",
        f"  failures by kind: {r['failures'] or 'none'}",
        f"  failures outside restart windows: {r['failures_outside_restarts'] or 'none'}",
        f"  corrupted bodies: {r['corrupted']}",
        f"  server-end restarts: {len(r['restarts'])}"
        + "".join(f"\n    at {x['t']:.0f}s: exit {x['exit']}, down {x['down_seconds']}s" for x in r["restarts"]),
        "  memory and fds (load paused; baseline after warm-up -> end):",
        end("client"),
        end("server") + " (server end restarted in between: a different process)",
        f"  verdict: {'OK' if r['verdict']['ok'] else 'FAIL'} "
        + ", ".join(k for k, v in r["verdict"].items() if k != "ok" and not v),
    ]
    for ex in r["failure_examples"][:5] + r["corrupted_examples"][:5]:
        lines.append(f"    e.g. {ex}")
    return "\n".join(lines)
