"""Control protocol of the forwarder: one request per line on a UNIX stream socket.

Text form (handy with ``socat - UNIX:/run/ptproxy-netem/ptp.sock``)::

    stats
    set loss=0.05 rate_mbit=20          # both directions
    set a_to_b.rate_mbit=5 b_to_a.delay_ms=30
    blackout 3.0                       # both directions, 3 s; "blackout 0" ends it
    reset                              # zero the counters
    quit                               # reply with final stats, tear down

JSON form: ``{"cmd": "set", "params": {"loss": 0.05}, "direction": "both"}``,
``{"cmd": "blackout", "seconds": 3, "direction": "a_to_b"}``. Every reply is one JSON line with
``"ok": true|false``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

DIRECTIONS = {
    "both": ("a_to_b", "b_to_a"),
    "a_to_b": ("a_to_b",),
    "ab": ("a_to_b",),
    "b_to_a": ("b_to_a",),
    "ba": ("b_to_a",),
}


def parse_request(line: str) -> dict[str, Any]:
    line = line.strip()
    if line.startswith("{"):
        req = json.loads(line)
        if not isinstance(req, dict) or "cmd" not in req:
            raise ValueError("JSON request needs a 'cmd'")
        return req
    words = line.split()
    if not words:
        raise ValueError("empty request")
    cmd, args = words[0].lower(), words[1:]
    if cmd == "set":
        params: dict[str, str] = {}
        for a in args:
            if "=" not in a:
                raise ValueError(f"set wants key=value, got {a!r}")
            k, v = a.split("=", 1)
            params[k] = v
        return {"cmd": "set", "params": params}
    if cmd == "blackout":
        if not args:
            raise ValueError("blackout wants a duration in seconds")
        req: dict[str, Any] = {"cmd": "blackout", "seconds": float(args[0])}
        if len(args) > 1:
            req["direction"] = args[1]
        return req
    return {"cmd": cmd}


def request(path: str | Path, req: dict[str, Any] | str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a forwarder's control socket and return its reply."""
    line = req if isinstance(req, str) else json.dumps(req)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError("forwarder closed the control connection without a reply")
    reply: dict[str, Any] = json.loads(buf)
    return reply
