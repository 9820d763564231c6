"""New connection IDs (NEW_CONNECTION_ID) are drawn from one urandom call, not two per ID.

aioquic draws each ID and each reset token separately: 14 getrandom system calls when a
handshake completes, on the path of a reconnecting client end (benchmarks/results/
link_latency.txt). Two Sessions joined in memory (tests/unit/test_io_session.py's Pair)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from ptproxy.tunnel.aioquic import connection as ptp_connection
from tests.unit.test_io_session import Pair, configs, run  # noqa: F401 - configs is a fixture


def test_the_handshake_issues_a_full_set_of_distinct_ids(configs: Any) -> None:  # noqa: F811
    async def main() -> Pair:
        pair = Pair(configs, None)
        try:
            await pair.connect()
            await asyncio.sleep(0.05)
            return pair
        finally:
            await pair.close()

    pair = run(main())
    assert pair.server is not None
    for quic in (pair.client.quic, pair.server.quic):
        cids = quic._host_cids
        limit = min(8, quic._remote_active_connection_id_limit)
        assert len(cids) == limit > 1
        assert len({c.cid for c in cids}) == limit
        assert len({c.stateless_reset_token for c in cids[1:]}) == limit - 1
        assert [c.sequence_number for c in cids] == list(range(limit))
        assert all(len(c.cid) == len(cids[0].cid) and len(c.stateless_reset_token) == 16 for c in cids[1:])


def test_replenishing_draws_once(configs: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    calls: list[int] = []
    urandom = os.urandom

    def counting_urandom(n: int) -> bytes:
        calls.append(n)
        return urandom(n)

    async def main() -> tuple[list[Any], list[Any]]:
        pair = Pair(configs, None)
        try:
            await pair.connect()
            quic = pair.client.quic
            before = list(quic._host_cids)
            del quic._host_cids[2:]  # as if the peer retired six of them
            monkeypatch.setattr(ptp_connection.os, "urandom", counting_urandom)
            quic._replenish_connection_ids()
            monkeypatch.undo()
            return before, list(quic._host_cids)
        finally:
            await pair.close()

    before, after = run(main())
    assert len(calls) == 1
    assert len(after) == len(before)
    assert after[:2] == before[:2]
    new = after[2:]
    assert {c.cid for c in new}.isdisjoint({c.cid for c in before})
    assert [c.sequence_number for c in new] == list(range(len(before), len(before) + len(new)))
