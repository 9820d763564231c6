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
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.config import ptproxy_configs
from benchmarks.harness.http import Conn, Failure
from benchmarks.harness.ports import free_port
from benchmarks.harness.procs import (
    Managed,
    ProcessGroups,
    fd_count,
    ptproxy_cmd,
    python_env,
    read_text,
    rss_kib,
    start_origin,
)
from ptproxy.ops.devcerts import make_demo_pki
from tools.origin_server import pattern_sha256

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


pattern_sha = functools.lru_cache(maxsize=256)(pattern_sha256)


# -- processes ----------------------------------------------------------------------------------


class Proc:
    """A ptproxy end that can be restarted; each start logs to ``<name>.<generation>.log``."""

    def __init__(self, name: str, config: Path, workdir: Path, groups: ProcessGroups) -> None:
        self.name, self.config, self.workdir, self.groups = name, config, workdir, groups
        self.m: Managed | None = None
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        self.m = self.groups.start(self.name, ptproxy_cmd(self.config), self._log(self.generation),
                                   env=python_env(), cwd=self.workdir, append=False)

    def _log(self, generation: int) -> Path:
        return self.workdir / f"{self.name}.{generation}.log"

    def log(self) -> str:
        return read_text(self._log(self.generation))

    def all_logs(self) -> str:
        return "".join(read_text(self._log(g)) for g in range(1, self.generation + 1))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int | None:
        return self.groups.stop(self.m, sig, timeout) if self.m is not None else None

    def sample(self) -> dict[str, int]:
        assert self.m is not None
        return {"rss_kib": rss_kib(self.m.pid), "fds": fd_count(self.m.pid), "pid": self.m.pid}


async def _wait_log(proc: Proc, text: str, count: int, timeout: float, all_logs: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proc.all_logs() if all_logs else proc.log()
        if log.count(text) >= count:
            return True
        await asyncio.sleep(0.1)
    return False


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
        conn = Conn("127.0.0.1", self.port, host_header="soak")
        while not self.stop:
            if self.paused.is_set():
                conn.close()
                self.idle_workers += 1
                while self.paused.is_set() and not self.stop:  # noqa: ASYNC110 - also polls self.stop
                    await asyncio.sleep(0.05)
                self.idle_workers -= 1
                continue
            op, target, body, chunks, n = self.pick(rng)
            started = time.monotonic()
            self.stats.requests += 1
            self.stats.by_op[op] = self.stats.by_op.get(op, 0) + 1
            try:
                r = await asyncio.wait_for(
                    conn.request("GET" if body is None else "POST", target, body, chunks=chunks, digest=True,
                                 keep=body is not None),
                    REQUEST_TIMEOUT,
                )
            except Failure as f:
                conn.close()
                self.stats.fail(f.kind, f"{op} {n}: {f.detail}", self.in_restart(started, time.monotonic()))
                if f.kind == "connect":
                    await asyncio.sleep(0.1)
                continue
            except TimeoutError:
                conn.close()
                self.stats.fail("timeout", f"{op} {n}", self.in_restart(started, time.monotonic()))
                continue
            except OSError as exc:
                conn.close()
                self.stats.fail("socket", f"{op} {n}: {exc}", self.in_restart(started, time.monotonic()))
                continue
            ended = time.monotonic()
            status, sha, length, doc = r.status, r.sha256, r.length, r.body
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
        while self.idle_workers < self.opts.concurrency and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, bounded by a deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(seconds)

    def resume(self) -> None:
        self.paused.clear()


async def run_soak(opts: SoakOptions) -> dict[str, Any]:
    keep_dir = opts.workdir is not None
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="ptproxy-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_demo_pki(workdir / "pki")
    groups = ProcessGroups()
    origin, origin_port = start_origin(groups, workdir)
    client_toml, server_toml = ptproxy_configs(
        workdir, pki, http_port=(http_port := free_port()), quic_port=free_port(),
        origin=f"127.0.0.1:{origin_port}", transport={"max_idle_timeout": 5000, "keep_alive_interval": 1000},
        client_extra={"system": {"connect_interval": 300}},
    )
    server = Proc("server", server_toml, workdir, groups)
    client = Proc("client", client_toml, workdir, groups)
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
        groups.stop(origin)
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
