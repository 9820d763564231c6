"""Where does a request's CPU go? Both ends of a loopback pair under wrk, sampled by py-spy.

    python -m benchmarks.profile_path [--seconds 15] [--conns 16] [--pure] [--out results/profile.md]

Starts an nginx origin, a ptproxy pair (``python -m ptproxy``), drives small GETs with wrk, and
records each end with ``py-spy record --native --format raw`` for the same window. Every sample
is charged to one bucket by its innermost frame that names a known component, so the table
answers "what would a faster X save": aioquic (QUIC + HTTP/3 in Python), the crypto and socket
C code beneath it, ptproxy's own Python, its compiled speedups, and the event loop.
Needs wrk, nginx and py-spy (``pip install py-spy``); root or ptrace permission for py-spy.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness.config import origin_conf, ptproxy_configs
from benchmarks.harness.ports import free_ports
from benchmarks.harness.procs import (
    ProcessGroups,
    log_has,
    nginx_cmd,
    ptproxy_cmd,
    python_env,
    wait_until,
)
from ptproxy.ops.devcerts import make_demo_pki

# Innermost match wins: a frame list is scanned from the leaf up, and the first rule that
# matches any frame decides the bucket.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("ptproxy compiled speedups", ("_speedups/", "ptproxy._speedups")),
    ("socket system calls (send/recv)", ("sendto", "recvfrom", "__send", "__recv", "sock_send", "writev", "__libc_write", "__libc_read", "epoll_wait")),
    ("TLS / AEAD / header protection (C)", ("libcrypto", "EVP_", "aes", "chacha", "_crypto.", "aioquic/_crypto", "cryptography")),
    ("QPACK (pylsqpack, C)", ("pylsqpack", "lsqpack")),
    ("aioquic (Python)", ("aioquic/",)),
    ("ptproxy (Python)", ("ptproxy/",)),
    ("event loop (uvloop / asyncio)", ("uvloop", "asyncio/")),
]


def bucket(frames: list[str]) -> str:
    for frame in frames:  # leaf first
        for name, needles in RULES:
            if any(n in frame for n in needles):
                return name
    return "other (interpreter, allocator, libc)"


def parse_raw(path: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """py-spy raw (collapsed) format: ``frame;frame;...;leaf count`` per line, root first.

    Returns samples per bucket, and for the ``ptproxy (Python)`` bucket samples per innermost
    ptproxy function (what compiling or reworking that function could save at most)."""
    counts: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        frames.reverse()
        b = bucket(frames)
        counts[b] += int(n)
        if b == "ptproxy (Python)":
            own[next(f for f in frames if "ptproxy/" in f)] += int(n)
    return counts, own


def table(title: str, counts: collections.Counter[str]) -> str:
    total = sum(counts.values()) or 1
    rows = [f"| {name} | {n} | {100 * n / total:.1f}% |" for name, n in counts.most_common()]
    return "\n".join([f"**{title}** ({total} samples)", "", "| bucket | samples | share |", "|---|---|---|", *rows, ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_path", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--pure", action="store_true", help="PTPROXY_NO_EXTENSIONS=1 for both ends")
    ap.add_argument("--path", default="/hello", help="what wrk fetches: /hello (5 B), /1k, /100k, /10m (bulk)")
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    a = ap.parse_args(argv)
    for tool in ("wrk", "nginx", "py-spy"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt install wrk nginx; pip install py-spy)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="ptproxy-profile-"))
    work.chmod(0o755)  # nginx's workers (nobody) read the bodies under it
    pki = make_demo_pki(work / "pki")
    origin_port, http_port, quic_port = free_ports(3)
    conf = origin_conf(work / "origin", "127.0.0.1", origin_port, workers=1)
    client, server = ptproxy_configs(work, pki, http_port=http_port, quic_port=quic_port,
                                     origin=f"127.0.0.1:{origin_port}")
    env = python_env(pure=True if a.pure else None)
    groups = ProcessGroups()
    try:
        groups.start("origin", nginx_cmd(conf), work / "origin.log")
        ends = {}
        for end, config in (("server", server), ("client", client)):
            ends[end] = groups.start(end, ptproxy_cmd(config), work / f"{end}.log", env=env).proc
        try:
            wait_until(lambda: log_has(work / "client.log", "tunnel ready"), 20, "tunnel ready")
        except TimeoutError:
            print((work / "client.log").read_text(), file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{http_port}{a.path}"
        subprocess.run(["wrk", "-t1", f"-c{a.conns}", "-d2s", url], capture_output=True)  # warm-up
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{a.conns}", f"-d{a.seconds + 2:g}s", url],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        spies = {
            end: subprocess.Popen(["py-spy", "record", "--native", "--format", "raw", "--rate", "250",
                                   "--duration", f"{int(a.seconds)}", "--output", str(work / f"{end}.raw"),
                                   "--pid", str(p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for end, p in ends.items()
        }
        for spy in spies.values():
            spy.wait(a.seconds + 60)
        wrk_out, _ = wrk.communicate(a.seconds + 30)
    finally:
        groups.stop_all()
    rps = next((ln.split()[-1] for ln in wrk_out.splitlines() if ln.startswith("Requests/sec")), "?")
    mode = "pure-Python twins" if a.pure else "compiled speedups"
    parts = [f"# Request-path profile ({mode}): wrk -c{a.conns} {a.path}, {rps} req/s, {a.seconds:g} s sampled at 250 Hz", ""]
    for end in ("client", "server"):
        counts, own = parse_raw(work / f"{end}.raw")
        parts.append(table(f"{end} end", counts))
        total = sum(counts.values()) or 1
        parts += [f"Top ptproxy functions ({end} end, innermost ptproxy frame, share of all samples):", ""]
        parts += [f"- `{name}`: {100 * n / total:.1f}%" for name, n in own.most_common(10)]
        parts.append("")
    report = "\n".join(parts)
    print(report)
    if a.out:
        a.out.write_text(report + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
