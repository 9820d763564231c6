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

from benchmarks.harness.http import Conn


async def get(c: Conn, path: str) -> dict[str, Any]:
    """One GET on ``c`` (reopened first, and counted, if the peer closed it while idle)."""
    r = await c.request("GET", path)
    return {"status": r.status, "t0": r.t0, "t_sent": r.t_sent, "t_head": r.t_head, "t1": r.t1, "ms": r.ms,
            "ms_from_send": (r.t1 - r.t_sent) * 1000, "bytes": r.length, "reconnected": r.reconnected}


def new_conn(host: str, port: int) -> Conn:
    return Conn(host, port, host_header="linkbench", user_agent="linkbench")


class Agent:
    def __init__(self) -> None:
        self.pools: dict[str, list[Conn]] = {}

    async def op_open(self, name: str, host: str, port: int, n: int, path: str = "/hello") -> dict[str, Any]:
        """Open n keep-alive connections and warm each with one request."""
        pool = self.pools.setdefault(name, [])
        while len(pool) < n:
            pool.append(new_conn(host, port))
        res = await asyncio.gather(*(get(c, path) for c in pool[:n]), return_exceptions=True)
        errs = [repr(r) for r in res if isinstance(r, BaseException)]
        return {"opened": n, "errors": errs}

    async def op_seq(self, name: str, path: str, n: int, idx: int = 0) -> dict[str, Any]:
        c = self.pools[name][idx]
        out = []
        for _ in range(n):
            try:
                r = await asyncio.wait_for(get(c, path), 30)
                out.append(r)
            except Exception as e:  # noqa: BLE001
                out.append({"error": repr(e)})
                c.close()
        return {"results": out}

    async def op_burst(self, name: str, path: str, n: int) -> dict[str, Any]:
        pool = self.pools[name]

        async def one(c: Conn) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(get(c, path), 30)
            except Exception as e:  # noqa: BLE001
                c.close()
                return {"error": repr(e)}

        t0 = time.monotonic()
        res = await asyncio.gather(*(one(c) for c in pool[:n]))
        return {"t0": t0, "results": list(res)}

    async def op_conc(self, name: str, path: str, n: int, per_conn: int) -> dict[str, Any]:
        """``n`` connections of the pool, each sending ``per_conn`` GETs one after another, all at once."""
        pool = self.pools[name][:n]

        async def loop(c: Conn) -> list[dict[str, Any]]:
            out = []
            for _ in range(per_conn):
                try:
                    out.append(await asyncio.wait_for(get(c, path), 30))
                except Exception as e:  # noqa: BLE001
                    c.close()
                    out.append({"error": repr(e)})
            return out

        res = await asyncio.gather(*(loop(c) for c in pool))
        return {"results": [r for rs in res for r in rs]}

    async def op_fresh(self, host: str, port: int, path: str, timeout: float = 60) -> dict[str, Any]:
        """A new connection, one GET (connect included in ms), then close."""
        c = new_conn(host, port)
        try:
            return await asyncio.wait_for(get(c, path), timeout)
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e)}
        finally:
            c.close()

    async def op_poll(
        self, targets: dict[str, list[Any]], path: str, timeout: float, interval: float, deadline: float,
        start_at: float | None = None,
    ) -> dict[str, Any]:
        """For each target concurrently: fresh connection + GET with a short timeout, again and
        again, until a 200. Returns the monotonic time of the first success's start and end.
        ``start_at`` (monotonic): the first attempt waits until then, so that a poll meant to
        start at an instant (a blackout's end) is not late by the command's own way here."""
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))

        async def one(host: str, port: int) -> dict[str, Any]:
            attempts, last = 0, ""
            t_start = time.monotonic()
            while time.monotonic() < t_start + deadline:
                attempts += 1
                c = new_conn(host, port)
                ts = time.monotonic()
                try:
                    r = await asyncio.wait_for(get(c, path), timeout)
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
