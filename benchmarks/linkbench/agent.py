"""The load agent: runs inside namespace a, reads one JSON command per line on stdin, answers one
JSON line on stdout. Keeps HTTP/1.1 keep-alive connections in named pools across commands, so
"silence" is really silence on the connections the next request uses.

All timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC is the same in every namespace), so the
runner can compare them with its own clock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    def alive(self) -> bool:
        return (
            self.writer is not None
            and self.reader is not None
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    async def connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self, path: str, sink: bool = False) -> dict[str, Any]:
        """One GET. Reconnects first when the peer closed the idle connection (counted)."""
        t0 = time.monotonic()
        reconnected = False
        if not self.alive():
            if self.writer is not None:
                self.reconnects += 1
            await self.connect()
            reconnected = True
        t_sent = time.monotonic()
        assert self.writer is not None and self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: linkbench\r\nUser-Agent: linkbench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        t_head = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        size = 0
        if "content-length" in hdrs:
            left = int(hdrs["content-length"])
            while left:
                chunk = await self.reader.read(min(left, 1 << 20))
                if not chunk:
                    raise ConnectionError("EOF in body")
                left -= len(chunk)
                size += len(chunk)
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = await self.reader.readuntil(b"\r\n")
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                await self.reader.readexactly(n)
                await self.reader.readexactly(2)
                size += n
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        t1 = time.monotonic()
        return {
            "status": status,
            "t0": t0,
            "t_sent": t_sent,
            "t_head": t_head,
            "t1": t1,
            "ms": (t1 - t0) * 1000,
            "ms_from_send": (t1 - t_sent) * 1000,
            "bytes": size,
            "reconnected": reconnected,
        }


class Agent:
    def __init__(self) -> None:
        self.pools: dict[str, list[Conn]] = {}

    async def op_open(self, name: str, host: str, port: int, n: int, path: str = "/hello") -> dict[str, Any]:
        """Open n keep-alive connections and warm each with one request."""
        pool = self.pools.setdefault(name, [])
        while len(pool) < n:
            pool.append(Conn(host, port))
        res = await asyncio.gather(*(c.get(path) for c in pool[:n]), return_exceptions=True)
        errs = [repr(r) for r in res if isinstance(r, BaseException)]
        return {"opened": n, "errors": errs}

    async def op_seq(self, name: str, path: str, n: int, idx: int = 0) -> dict[str, Any]:
        c = self.pools[name][idx]
        out = []
        for _ in range(n):
            try:
                r = await asyncio.wait_for(c.get(path), 30)
                out.append(r)
            except Exception as e:  # noqa: BLE001
                out.append({"error": repr(e)})
                c.close()
        return {"results": out}

    async def op_burst(self, name: str, path: str, n: int) -> dict[str, Any]:
        pool = self.pools[name]

        async def one(c: Conn) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(c.get(path), 30)
            except Exception as e:  # noqa: BLE001
                c.close()
                return {"error": repr(e)}

        t0 = time.monotonic()
        res = await asyncio.gather(*(one(c) for c in pool[:n]))
        return {"t0": t0, "results": list(res)}

    async def op_fresh(self, host: str, port: int, path: str, timeout: float = 60) -> dict[str, Any]:
        """A new connection, one GET (connect included in ms), then close."""
        c = Conn(host, port)
        try:
            return await asyncio.wait_for(c.get(path), timeout)
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e)}
        finally:
            c.close()

    async def op_poll(
        self, targets: dict[str, list[Any]], path: str, timeout: float, interval: float, deadline: float
    ) -> dict[str, Any]:
        """For each target concurrently: fresh connection + GET with a short timeout, again and
        again, until a 200. Returns the monotonic time of the first success's start and end."""

        async def one(host: str, port: int) -> dict[str, Any]:
            attempts, last = 0, ""
            t_start = time.monotonic()
            while time.monotonic() < t_start + deadline:
                attempts += 1
                c = Conn(host, port)
                ts = time.monotonic()
                try:
                    r = await asyncio.wait_for(c.get(path), timeout)
                    if r["status"] == 200:
                        r.update(attempts=attempts, t_poll_start=t_start, t_attempt=ts)
                        return r
                    last = f"status {r['status']}"
                except Exception as e:  # noqa: BLE001
                    last = repr(e)
                finally:
                    c.close()
                await asyncio.sleep(max(0.0, ts + interval - time.monotonic()))
            return {"error": f"no success within {deadline}s ({attempts} attempts, last {last})"}

        names = list(targets)
        res = await asyncio.gather(*(one(h, p) for h, p in targets.values()))
        return {"results": dict(zip(names, res))}

    async def op_close(self, name: str) -> dict[str, Any]:
        for c in self.pools.pop(name, []):
            c.close()
        return {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": True}), flush=True)
        while line := await reader.readline():
            req = json.loads(line)
            op = req.pop("op")
            if op == "quit":
                break
            try:
                out = await getattr(self, f"op_{op}")(**req)
                out["ok"] = True
            except Exception as e:  # noqa: BLE001
                out = {"ok": False, "error": repr(e)}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(Agent().run())
