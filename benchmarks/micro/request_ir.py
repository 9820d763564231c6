"""``python -m benchmarks.micro.request_ir``: instructions per small request through the real pair.

Wall and CPU time on a shared 2-core machine move by 10-30 % between runs; instruction counts do
not. This starts a real pair, ``python -m ptproxy`` client end and server end, each under
``valgrind --tool=callgrind``, in front of the test origin (tools/origin_server.py, not measured),
and sends small keep-alive GETs (``GET /bytes/100``) on one connection one after another (``seq``)
or on 8 connections at once (``conc8``).

Set-up cancels out as in :mod:`benchmarks.micro.packets_ir`, but within one run per pair: after a
warm-up, ``callgrind_control --dump`` (which also zeroes the counters) closes each phase; a phase
of ``small`` requests and one of ``large`` requests follow, and the difference in instructions
divided by the difference in requests is the cost of one request at each end. Whatever a phase
costs regardless of its size (the dump itself, a timer, the gap between phases) cancels.

``--profile`` also prints, per end, the callgrind_annotate top functions of the large phase
(exclusive Ir per object and per function), and a deterministic count of Python function calls per request: a
``sitecustomize`` (on ``PYTHONPATH`` of the ends only) enables cProfile on SIGRTMIN+1 and dumps it
on SIGRTMIN+2, around the same requests through a pair not under valgrind.

``PTPROXY_NO_EXTENSIONS=1`` in the environment selects the pure twins; ``--modes compiled,pure``
runs both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.config import ptproxy_configs
from benchmarks.harness.ports import free_ports
from benchmarks.harness.procs import python_env
from ptproxy.ops.devcerts import make_demo_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET = "/bytes/100"
WARMUP = 40
# (small, large) requests per phase; per scenario: connections.
SIZES = {"seq": (60, 300), "conc8": (80, 400), "fresh": (40, 200)}
CONNECTIONS = {"seq": 1, "conc8": 8, "fresh": 1}
# Scenarios whose every request goes on a new connection, closed after its response: the accept
# path's cost per request (``fresh`` minus ``seq``).
FRESH = {"fresh"}
# No keep-alive ping and no idle close while callgrind slows everything ~50x.
TRANSPORT = {"max_idle_timeout": 120000, "keep_alive_interval": 60000}
READY_TIMEOUT = 300.0
RESPONSE_TIMEOUT = 120.0  # per response, under callgrind; longer is a hang

SITECUSTOMIZE = '''
import os, signal
_out = os.environ.get("PTPROXY_IR_PROFILE")
if _out:
    import cProfile
    _prof = []
    def _start(signum, frame):
        p = cProfile.Profile()
        _prof.append(p)
        p.enable()
    def _dump(signum, frame):
        p = _prof.pop()
        p.disable()
        p.dump_stats(_out + ".tmp")
        os.replace(_out + ".tmp", _out)
    signal.signal(signal.SIGRTMIN + 1, _start)
    signal.signal(signal.SIGRTMIN + 2, _dump)
'''


# -- the HTTP/1.1 driver ---------------------------------------------------------------------------


class Driver:
    """Keeps ``connections`` keep-alive connections open across phases (a phase sends ``n``
    requests spread over them; connection set-up belongs to the warm-up)."""

    def __init__(self, port: int, connections: int, *, fresh: bool = False) -> None:
        self.port = port
        self.connections = connections
        self.fresh = fresh
        self.loop = asyncio.new_event_loop()
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def _request(self) -> bytes:
        return f"GET {TARGET} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUser-Agent: request_ir\r\n\r\n".encode()

    async def _open(self) -> None:
        for _ in range(self.connections):
            self.conns.append(await asyncio.open_connection("127.0.0.1", self.port))

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
        request = self._request()
        for _ in range(count):
            writer.write(request)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RESPONSE_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(f"no response within {RESPONSE_TIMEOUT:g}s (a hang)") from None
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response {head[:200]!r}")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length is None:
                raise RuntimeError(f"no Content-Length in {head[:300]!r}")
            await reader.readexactly(int(length.group(1)))

    async def _fresh(self, count: int) -> None:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                await self._run(reader, writer, 1)
            finally:
                writer.close()
                await writer.wait_closed()

    def phase(self, n: int) -> None:
        if self.fresh:
            self.loop.run_until_complete(self._fresh(n))
            return
        if not self.conns:
            self.loop.run_until_complete(self._open())
        per, extra = divmod(n, self.connections)
        counts = [per + (i < extra) for i in range(self.connections)]

        async def all_() -> None:
            await asyncio.gather(*(self._run(r, w, c) for (r, w), c in zip(self.conns, counts)))

        self.loop.run_until_complete(all_())

    def close(self) -> None:
        for _, w in self.conns:
            w.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


# -- the pair ------------------------------------------------------------------------------------


class PairRun:
    """Origin + both ends (under callgrind unless ``valgrind`` is False) in ``tmp``."""

    def __init__(self, tmp: Path, *, pure: bool, valgrind: bool, profile: bool = False) -> None:
        self.tmp = tmp
        self.valgrind = valgrind
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        pki = make_demo_pki(tmp / "pki")
        env = python_env(pure=pure)
        self.origin = subprocess.Popen(
            [sys.executable, "-m", "tools.origin_server", "--port", "0"], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        assert self.origin.stdout is not None
        line = self.origin.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"origin did not start: {line!r}")
        origin_port = int(line.split()[-1])
        self.http_port, quic_port = free_ports(2)
        client_toml, server_toml = ptproxy_configs(
            tmp, pki, http_port=self.http_port, quic_port=quic_port, origin=f"127.0.0.1:{origin_port}",
            transport=TRANSPORT,
        )
        if profile:
            site = tmp / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
        self.out: dict[str, Path] = {}
        for name, toml in (("server", server_toml), ("client", client_toml)):
            cmd = [sys.executable, "-m", "ptproxy", "-c", str(toml)]
            if valgrind:
                cmd = ["valgrind", "--tool=callgrind", "--dump-instr=no",
                       f"--callgrind-out-file={tmp}/{name}.cg.%p", *cmd]
            end_env = dict(env)
            if profile:
                end_env["PTPROXY_IR_PROFILE"] = str(tmp / f"{name}.prof")
                self.out[name] = tmp / f"{name}.prof"
            log = open(tmp / f"{name}.log", "wb")  # closed below, once the process has it
            self.procs[name] = subprocess.Popen(cmd, cwd=tmp, env=end_env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL)
            log.close()
            marker = "started endpoint at" if name == "server" else "tunnel ready"
            self._wait_log(name, marker)

    def _wait_log(self, name: str, marker: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while marker not in self.log(name):
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} end did not start:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def dump(self) -> dict[str, Path]:
        """Dump (and zero) both ends' callgrind counters; the files written."""
        files = {}
        for name, proc in self.procs.items():
            before = set(self.tmp.glob(f"{name}.cg.{proc.pid}.*"))
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
            deadline = time.monotonic() + 60
            while True:
                new = set(self.tmp.glob(f"{name}.cg.{proc.pid}.*")) - before
                if new and _totals(next(iter(new))) is not None:
                    files[name] = next(iter(new))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no callgrind dump from the {name} end")
                time.sleep(0.1)
        return files

    def signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            proc.send_signal(sig)

    def close(self) -> None:
        for name in ("client", "server"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.origin.terminate()
        self.origin.wait(10)
        if self.origin.stdout is not None:
            self.origin.stdout.close()
        for name in self.procs:
            for marker in ("Traceback", "Exception in callback", "was never retrieved"):
                if marker in self.log(name):
                    print(f"# WARNING: {name} end logged {marker!r}:\n{self.log(name)[-2000:]}", file=sys.stderr)


def _totals(path: Path) -> int | None:
    text = path.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(found.group(1)) if found else None


def exclusive_costs(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Exclusive Ir per ELF object and per function (object:function) of one callgrind dump.

    callgrind_annotate's inclusive view is of little use here: every Python frame is the same
    ``_PyEval_EvalFrameDefault``, and recursion through it folds the call graph into cycles."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    by_object: dict[str, int] = {}
    by_function: dict[str, int] = {}
    ob = fn = ""
    skip_next = False
    name_re = re.compile(r"^(c?)(ob|fn)=(?:\((\d+)\))?\s*(.*)$")
    with open(path, errors="replace") as f:
        for line in f:
            if not line or line[0] == "\n":
                continue
            head = line[0]
            if head.isdigit() or head in "+-*":
                if skip_next:  # the inclusive cost of a call, not this function's own
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    cost = int(parts[1])
                    by_object[ob] = by_object.get(ob, 0) + cost
                    key = f"{ob}:{fn}"
                    by_function[key] = by_function.get(key, 0) + cost
                continue
            if line.startswith("calls="):
                skip_next = True
                continue
            m = name_re.match(line.rstrip("\n"))
            if m is None:
                continue
            callee, kind, ident, name = m.groups()
            table = names[kind]
            if ident is not None:
                if name:
                    table[ident] = name
                name = table.get(ident, name)
            if callee:
                continue  # cob=/cfn= name the callee of the next calls= line
            if kind == "ob":
                ob = os.path.basename(name)
            else:
                fn = name
    return by_object, by_function


# -- measurements ----------------------------------------------------------------------------------


def measure_ir(scenario: str, pure: bool, profile_top: int = 0) -> tuple[dict[str, float], list[str]]:
    """Ir per request for each end (``client``, ``server``) and the annotate lines of the large
    phase when ``profile_top``."""
    small, large = SIZES[scenario]
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ptproxy-request-ir-") as tmpname:
        tmp = Path(tmpname)
        run = PairRun(tmp, pure=pure, valgrind=True)
        driver = Driver(run.http_port, CONNECTIONS[scenario], fresh=scenario in FRESH)
        try:
            driver.phase(WARMUP)
            run.dump()
            driver.phase(small)
            first = run.dump()
            driver.phase(large)
            second = run.dump()
            result = {}
            for name in ("client", "server"):
                a, b = _totals(first[name]), _totals(second[name])
                assert a is not None and b is not None
                result[name] = (b - a) / (large - small)
            if profile_top:
                for name in ("client", "server"):
                    by_object, by_function = exclusive_costs(second[name])
                    total = sum(by_object.values()) or 1
                    lines.append(f"## {name} end, {scenario}: exclusive Ir per request by object (large phase / {large})")
                    for obj, cost in sorted(by_object.items(), key=lambda kv: -kv[1])[:12]:
                        lines.append(f"{cost / large:>10.0f} {100 * cost / total:>5.1f}%  {obj}")
                    lines.append(f"## {name} end, {scenario}: top exclusive functions, Ir per request")
                    for fn, cost in sorted(by_function.items(), key=lambda kv: -kv[1])[:profile_top]:
                        lines.append(f"{cost / large:>10.0f} {100 * cost / total:>5.1f}%  {fn}")
        finally:
            driver.close()
            run.close()
    return result, lines


def _short(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    for marker in ("/site-packages/", "/lib/python3.11/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        if str(REPO_ROOT) in filename:
            filename = os.path.relpath(filename, REPO_ROOT)
    return f"{filename}:{line}({func})"


def measure_calls(scenario: str, pure: bool, top: int) -> list[str]:
    """Python function calls per request at each end (cProfile, no valgrind)."""
    _, large = SIZES[scenario]
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ptproxy-request-calls-") as tmpname:
        tmp = Path(tmpname)
        run = PairRun(tmp, pure=pure, valgrind=False, profile=True)
        driver = Driver(run.http_port, CONNECTIONS[scenario], fresh=scenario in FRESH)
        try:
            driver.phase(WARMUP)
            run.signal_all(signal.SIGRTMIN + 1)
            time.sleep(0.3)
            driver.phase(large)
            run.signal_all(signal.SIGRTMIN + 2)
            for name in ("client", "server"):
                path = run.out[name]
                deadline = time.monotonic() + 30
                while not path.exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no profile from the {name} end")
                    time.sleep(0.1)
                stats: Any = pstats.Stats(str(path)).stats
                total = sum(v[1] for v in stats.values())
                groups: dict[str, int] = {}
                for key, v in stats.items():
                    fn = key[0]
                    group = ("ptproxy" if "/ptproxy/" in fn else "aioquic" if "aioquic" in fn
                             else "asyncio" if "asyncio" in fn else "builtin" if fn == "~" else "other")
                    groups[group] = groups.get(group, 0) + v[1]
                split = ", ".join(f"{g} {c / large:.0f}" for g, c in sorted(groups.items(), key=lambda x: -x[1]))
                lines.append(f"## {name} end, {scenario}: {total / large:.0f} Python calls per request ({split})")
                tt_total = sum(v[2] for v in stats.values()) or 1.0
                lines.append(f"{'calls/req':>9} {'tottime%':>8}  function (all, by calls)")
                for key, v in sorted(stats.items(), key=lambda kv: -kv[1][1])[:top]:
                    lines.append(f"{v[1] / large:>9.2f} {100 * v[2] / tt_total:>7.1f}%  {_short(key)}")
                lines.append(f"{'calls/req':>9} {'tottime%':>8}  function (ptproxy's own, by time in the function)")
                own = [kv for kv in stats.items() if "/ptproxy/" in kv[0][0]]
                for key, v in sorted(own, key=lambda kv: -kv[1][2])[:top]:
                    lines.append(f"{v[1] / large:>9.2f} {100 * v[2] / tt_total:>7.1f}%  {_short(key)}")
        finally:
            driver.close()
            run.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro.request_ir", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="seq,conc8", help="comma-separated: seq, conc8, fresh (a new connection per request; default seq,conc8)")
    default_mode = "pure" if os.environ.get("PTPROXY_NO_EXTENSIONS") == "1" else "compiled"
    ap.add_argument("--modes", default=default_mode, help="comma-separated: compiled, pure")
    ap.add_argument("--profile", action="store_true",
                    help="also the callgrind top functions and cProfile calls per request (first mode, seq)")
    ap.add_argument("--top", type=int, default=25, help="rows per profile table (default 25)")
    a = ap.parse_args(argv)
    modes = a.modes.split(",")
    scenarios = a.scenarios.split(",")
    print(f"# callgrind Ir per small keep-alive GET ({TARGET}) through the real pair; origin not counted")
    print(f"# {'mode':<9} {'scenario':<8} {'client':>10} {'server':>10} {'both':>10}")
    profile_lines: list[str] = []
    for mode in modes:
        for scenario in scenarios:
            want_profile = a.profile and mode == modes[0] and scenario == scenarios[0]
            result, lines = measure_ir(scenario, mode == "pure", a.top if want_profile else 0)
            profile_lines.extend(lines)
            c, s = result["client"], result["server"]
            print(f"  {mode:<9} {scenario:<8} {c:>10.0f} {s:>10.0f} {c + s:>10.0f}", flush=True)
    if a.profile:
        for line in profile_lines:
            print(line)
        for line in measure_calls(scenarios[0], modes[0] == "pure", a.top):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
