"""Requests beyond the server's stream limit queue at the client end and all get through.

Three times ``max_concurrent_http_streams`` requests arrive at once, each held at the origin for a
moment so the streams really are all busy: every one is answered by the origin (no 503), because
waiting requests are handed the streams the server grants back as the earlier ones finish, as
many at a time as it grants. (The order of the grants is checked in-process, in
tests/unit/test_io_session.py, where it is deterministic.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.integration.test_ops_metrics import sample, scrape
from tests.support.h1client import request
from tests.support.pair import Pair, free_port

STREAMS = 3
REQUESTS = 3 * STREAMS


def test_three_times_the_stream_limit_at_once_all_complete(make_pair: Callable[..., Pair]) -> None:
    both = {"transport": {"max_concurrent_http_streams": STREAMS},
            "limits": {"stream_queue_timeout": 30000}}
    pair = make_pair(both, both)

    def one(i: int) -> tuple[int, bytes]:
        resp = request(pair.http_port, "GET", f"/sleep?ms=300&i={i}&{uuid.uuid4().hex[:8]}", timeout=60)
        return resp.status, resp.body

    with ThreadPoolExecutor(REQUESTS) as pool:
        results = list(pool.map(one, range(REQUESTS)))
    assert [status for status, _ in results] == [200] * REQUESTS, results
    assert "streams busy" not in pair.client_log()
    # The slots all came back: the tunnel still carries a full set at once.
    with ThreadPoolExecutor(STREAMS) as pool:
        assert [s for s, _ in pool.map(one, range(STREAMS))] == [200] * STREAMS



def test_answered_requests_give_the_client_end_the_whole_stream_limit_back(make_pair: Callable[..., Pair]) -> None:
    """Once its requests are answered, the client end may open the server's whole
    max_concurrent_http_streams again (``ptproxy_stream_credit`` after each answer; below 16
    streams every answer's credit is announced with it, above in batches of an eighth). With
    aioquic's batched MAX_STREAMS it had 4, 3, 2, 4, 3, 2, ... of 4: the rest of a burst after a
    quiet spell waited a round trip for the credit its first requests' arrival released
    (linkbench's 64-request burst after silence, max_concurrent_http_streams 100: 11-13 requests at
    two round trips in 3 bursts of 12)."""
    limit = 4
    cport = free_port()
    pair = make_pair({"transport": {"max_concurrent_http_streams": limit}, "metrics": {"bind_address": f"127.0.0.1:{cport}"}},
                     {"transport": {"max_concurrent_http_streams": limit}})  # fmt: skip
    credit = []
    for _ in range(2 * limit + 1):
        assert request(pair.http_port, "GET", "/status/204").status == 204
        # The credit nearly always rides in the answer's own packet, but a loaded server end may
        # send the answer's last frame a packet ahead of the credit its release frees: wait for it
        # (without sending anything). Batched, it never came: the gauge stayed below the limit.
        credit.append(_credit_settled(cport, limit))
    # Nearly always exactly the limit. On a loaded machine (two busy loops on the 2 cores) about one
    # run in four had one answer whose credit stayed unannounced (3 of 4) until the next request:
    # not explained yet, and one stream short of the limit is no round trip for a burst. Batched
    # (before), the credit fell to half the limit: 3, 2, 4, 3, 2, ...
    assert min(credit) >= limit - 1, credit
    assert credit.count(limit) >= len(credit) - 2, credit


def _credit_settled(metrics_port: int, limit: int, within: float = 2.0) -> float:
    """The client end's ``ptproxy_stream_credit`` once it reached ``limit``, or its value after
    ``within`` seconds without reaching it."""
    deadline = time.monotonic() + within
    while True:
        value = sample(scrape(metrics_port), "ptproxy_stream_credit")
        if value >= limit or time.monotonic() > deadline:
            return value
        time.sleep(0.01)
