"""Small traffic tools to run inside the namespaces (tests, benchmarks, manual checks).

    python -m tools.netem.tools ping HOST [--count N] [--interval S]
    python -m tools.netem.tools udp-recv --port P [--idle S] [--records]
    python -m tools.netem.tools udp-send HOST P --count N [--size B] [--pps R]
    python -m tools.netem.tools tcp-recv --port P
    python -m tools.netem.tools tcp-send HOST P (--bytes N | --seconds S)
    python -m tools.netem.tools udp-tap --ports P[,P...]

Receivers print ``{"ready": true}`` once bound, every tool prints one JSON result line last.
Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC is shared by all namespaces).
``ping`` uses a raw ICMP socket (root), so it needs no ping binary.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any

UDP_HDR = struct.Struct("!Qd")  # seq, send time


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def _kernel_time_ns(anc: list[tuple[int, int, bytes]], default: int) -> int:
    """The SO_TIMESTAMPNS receive time (CLOCK_REALTIME ns) in ``anc``, else ``default``."""
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
            sec, nsec = struct.unpack_from("@qq", cdata)
            return int(sec * 1_000_000_000 + nsec)
    return default


def cmd_ping(a: argparse.Namespace) -> None:
    """RTT = kernel receive timestamp - time just before sendto (both CLOCK_REALTIME), so a
    late wakeup of this process does not inflate it (as iputils ping)."""
    fam = _family(a.host)
    v6 = fam == socket.AF_INET6
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    ident = os.getpid() & 0xFFFF
    req_type, rep_type = (128, 129) if v6 else (8, 0)
    sent: dict[int, int] = {}
    rtts: dict[int, float] = {}
    pad = b"\xa5" * max(0, a.size - 8)
    next_send = time.monotonic()
    seq = 0
    deadline = None
    with s:
        while True:
            now = time.monotonic()
            if seq < a.count and now >= next_send:
                seq += 1
                payload = struct.pack("!d", now) + pad
                hdr = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
                csum = 0 if v6 else _checksum(hdr + payload)  # kernel fills ICMPv6's
                pkt = struct.pack("!BBHHH", req_type, 0, csum, ident, seq) + payload
                sent[seq] = time.time_ns()
                s.sendto(pkt, (a.host, 0))
                next_send += a.interval
                if seq == a.count:
                    deadline = time.monotonic() + a.timeout
            if deadline is not None and (time.monotonic() >= deadline or len(rtts) == a.count):
                break
            wait = (next_send if seq < a.count else deadline or now) - time.monotonic()
            r, _, _ = select.select([s], [], [], max(0.0, wait))
            if not r:
                continue
            data, anc, _flags, _addr = s.recvmsg(65535, 256)
            t_rx = _kernel_time_ns(anc, time.time_ns())
            off = 0 if v6 else (data[0] & 0x0F) * 4
            if len(data) < off + 8:
                continue
            typ, _code, _c, rid, rseq = struct.unpack_from("!BBHHH", data, off)
            if typ == rep_type and rid == ident and rseq in sent and rseq not in rtts:
                rtts[rseq] = (t_rx - sent[rseq]) / 1e6
    vals = [rtts[k] for k in sorted(rtts)]
    _emit(
        {
            "sent": seq,
            "received": len(vals),
            "rtts_ms": vals,
            "min_ms": min(vals) if vals else None,
            "avg_ms": sum(vals) / len(vals) if vals else None,
            "max_ms": max(vals) if vals else None,
        }
    )


def _big_rcvbuf(s: socket.socket, size: int = 16 << 20) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE (root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def cmd_udp_recv(a: argparse.Namespace) -> None:
    fam = _family(a.bind)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    _big_rcvbuf(s)
    s.bind((a.bind, a.port))
    _emit({"ready": True, "port": s.getsockname()[1]})
    count = nbytes = ooo = dup = 0
    max_seq = -1
    seen: set[int] = set()
    records: list[tuple[int, float, float]] = []
    first = last = None
    start = time.monotonic()
    with s:
        while True:
            now = time.monotonic()
            if a.count and count >= a.count:
                break
            if now - start > a.max_wait:
                break
            limit = (last + a.idle) if last is not None else (start + a.max_wait)
            r, _, _ = select.select([s], [], [], max(0.0, min(limit, start + a.max_wait) - now))
            if not r:
                if last is not None:
                    break
                continue
            data = s.recv(65535)
            t = time.monotonic()
            if first is None:
                first = t
            last = t
            count += 1
            nbytes += len(data)
            if len(data) >= UDP_HDR.size:
                seq, ts = UDP_HDR.unpack_from(data)
                if seq in seen:
                    dup += 1
                seen.add(seq)
                if seq < max_seq:
                    ooo += 1
                max_seq = max(max_seq, seq)
                if a.records:
                    records.append((seq, ts, t))
    out: dict[str, Any] = {
        "count": count,
        "bytes": nbytes,
        "unique": len(seen),
        "duplicates": dup,
        "out_of_order": ooo,
        "max_seq": max_seq,
        "first": first,
        "last": last,
    }
    if a.records:
        out["records"] = records
    _emit(out)


def cmd_udp_send(a: argparse.Namespace) -> None:
    s = socket.socket(_family(a.host), socket.SOCK_DGRAM)
    pad = b"\0" * max(0, a.size - UDP_HDR.size)
    interval = 1.0 / a.pps if a.pps > 0 else 0.0
    t0 = time.monotonic()
    errors = 0
    with s:
        for seq in range(a.count):
            if interval:
                due = t0 + seq * interval
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
            try:
                s.sendto(UDP_HDR.pack(seq, time.monotonic()) + pad, (a.host, a.port))
            except OSError:
                errors += 1
    _emit({"sent": a.count - errors, "errors": errors, "seconds": time.monotonic() - t0})


def cmd_tcp_recv(a: argparse.Namespace) -> None:
    fam = _family(a.bind)
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(1)
    _emit({"ready": True, "port": ls.getsockname()[1]})
    ls.settimeout(a.max_wait)
    with ls:
        c, _ = ls.accept()
    t_accept = time.monotonic()
    buf = bytearray(1 << 20)
    n = 0
    first = last = None
    samples: list[tuple[float, int]] = []
    with c:
        c.settimeout(a.max_wait)
        while True:
            k = c.recv_into(buf)
            if not k:
                break
            t = time.monotonic()
            if first is None:
                first = t
            last = t
            n += k
            if a.samples and (not samples or t - samples[-1][0] >= a.samples):
                samples.append((t, n))
    secs = (last - first) if first is not None and last is not None else 0.0
    out: dict[str, Any] = {
        "bytes": n,
        "accept": t_accept,
        "first": first,
        "last": last,
        "seconds": secs,
        "mbit": (n * 8 / secs / 1e6) if secs > 0 else None,
    }
    if a.samples:
        out["samples"] = samples
    _emit(out)


def cmd_tcp_send(a: argparse.Namespace) -> None:
    s = socket.socket(_family(a.host), socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect((a.host, a.port))
    chunk = b"\x5a" * (256 << 10)
    t0 = time.monotonic()
    sent = 0
    with s:
        while True:
            if a.bytes and sent >= a.bytes:
                break
            if a.seconds and time.monotonic() - t0 >= a.seconds:
                break
            want = len(chunk) if not a.bytes else min(len(chunk), a.bytes - sent)
            sent += s.send(memoryview(chunk)[:want])
        s.shutdown(socket.SHUT_WR)
        # wait for the receiver to close: everything was delivered
        s.settimeout(a.max_wait)
        while s.recv(4096):
            pass
    _emit({"bytes": sent, "seconds": time.monotonic() - t0})


def cmd_udp_tap(a: argparse.Namespace) -> None:
    """Every UDP datagram from or to one of ``--ports`` crossing this namespace's interfaces, as it
    crosses (the kernel's timestamp, taken where a capture sees the packet: a process's wake-up
    and work are not in it): one JSON line each, ``{"t": monotonic s, "dir": "in" | "out", "src",
    "dst", "len": UDP payload bytes}``; until killed. AF_PACKET (root), IPv4 and IPv6. Lined up
    with a process's own timestamps, it tells the link's time from the ends' (e.g. a server end's
    work between a datagram's arrival and its first log line)."""
    ports = {int(x) for x in a.ports.split(",") if x}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))  # ETH_P_ALL
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _emit({"ready": True})
    while True:
        data, anc, _flags, addr = s.recvmsg(65535, 256)
        t_real = _kernel_time_ns(anc, time.time_ns())
        version = data[0] >> 4 if data else 0
        if version == 4 and len(data) >= 28 and data[9] == socket.IPPROTO_UDP:
            off, fam, src, dst = (data[0] & 0x0F) * 4, socket.AF_INET, data[12:16], data[16:20]
        elif version == 6 and len(data) >= 48 and data[6] == socket.IPPROTO_UDP:
            off, fam, src, dst = 40, socket.AF_INET6, data[8:24], data[24:40]
        else:
            continue
        sport, dport, length = struct.unpack_from("!HHH", data, off)
        if sport not in ports and dport not in ports:
            continue
        t = time.monotonic() - (time.time_ns() - t_real) / 1e9
        _emit({
            "t": round(t, 6), "dir": "out" if addr[2] == socket.PACKET_OUTGOING else "in",
            "src": f"{socket.inet_ntop(fam, src)}:{sport}", "dst": f"{socket.inet_ntop(fam, dst)}:{dport}",
            "len": length - 8,
        })


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.netem.tools", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ping", help="ICMP echo RTTs (raw socket)")
    p.add_argument("host")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--timeout", type=float, default=2.0, help="wait after the last request")
    p.set_defaults(fn=cmd_ping)
    p = sub.add_parser("udp-recv", help="count (and record) datagrams from udp-send")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=0, help="stop after this many")
    p.add_argument("--idle", type=float, default=1.0, help="stop when idle this long")
    p.add_argument("--max-wait", type=float, default=30.0)
    p.add_argument("--records", action="store_true", help="output [seq, sent, received] each")
    p.set_defaults(fn=cmd_udp_recv)
    p = sub.add_parser("udp-send", help="send numbered, timestamped datagrams")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=100, help="UDP payload bytes")
    p.add_argument("--pps", type=float, default=1000.0, help="packets per second (0: flat out)")
    p.set_defaults(fn=cmd_udp_send)
    p = sub.add_parser("tcp-recv", help="accept one connection, read to EOF, report the rate")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--samples", type=float, default=0.0, help="record (t, bytes) every S seconds")
    p.set_defaults(fn=cmd_tcp_recv)
    p = sub.add_parser("tcp-send", help="connect and send bytes as fast as TCP allows")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.set_defaults(fn=cmd_tcp_send)
    p = sub.add_parser("udp-tap", help="kernel-timestamped log of UDP datagrams on some ports")
    p.add_argument("--ports", required=True, help="comma-separated")
    p.set_defaults(fn=cmd_udp_tap)
    args = ap.parse_args(argv)
    if args.cmd == "tcp-send" and not (args.bytes or args.seconds):
        ap.error("tcp-send needs --bytes or --seconds")
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
