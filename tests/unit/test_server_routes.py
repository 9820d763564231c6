"""Server end of routes, sans-IO parts: the route table and path rules, the balancing policies, the
origin health state machine (with a fake clock), and the pending queue of a pool."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from ptproxy.errors import UpstreamError
from ptproxy.ops.config import Config, Health, parse
from ptproxy.server.balance import LeastRequests, PeerHash, RandomChoice, RoundRobin, make_balancer
from ptproxy.server.health import OriginHealth
from ptproxy.server.routes import DEFAULT_ROUTE, build_routes, internal_fields, rewrite_path
from ptproxy.server.upstream import NoOriginAvailable, RouteRuntime
from ptproxy.tunnel import PeerIdentity
from tools.toml_writer import merge, to_toml


def server_config(extra: dict[str, object] | None = None) -> Config:
    base = {
        "general": {
            "mode": "Server",
            "peer_hostname": ["a.example", "b.example"],
            "http_connect_address": ["127.0.0.1:1001", "127.0.0.1:1002"],
        },
        "tls": {"cert": "c.crt", "key": "c.key"},
    }
    return parse(to_toml(merge(base, extra)), path=Path("server.toml"))


def identity(name: str) -> PeerIdentity:
    return PeerIdentity(name, "CN=x", "CN=ca", "01", "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "TLS_AES_128_GCM_SHA256")


# -- the route table ----------------------------------------------------------------------------


def test_default_route_is_http_connect_address_with_system_headers() -> None:
    routes = build_routes(server_config({"system": {"request_headers": ["X-SSL-Subject"]}}))
    default = routes[DEFAULT_ROUTE]
    assert default.origins == (("127.0.0.1", 1001), ("127.0.0.1", 1002))
    assert default.balance == "RoundRobin"
    assert default.request_headers == ("X-SSL-Subject",)
    assert default.queue is None and default.allowed_peers is None


def test_a_default_entry_sets_the_default_routes_options() -> None:
    config = server_config(
        {
            "system": {"request_headers": ["X-SSL-Subject"]},
            "routes": [
                {"name": "default", "balance": "LeastRequests", "request_headers": ["X-Forwarded-For"]},
                {"name": "billing", "origins": ["10.0.0.5:8080"], "allowed_peers": ["a.example"]},
            ],
        }
    )
    routes = build_routes(config)
    assert routes["default"].balance == "LeastRequests"
    assert routes["default"].request_headers == ("X-Forwarded-For",)
    assert routes["billing"].origins == (("10.0.0.5", 8080),)
    assert routes["billing"].request_headers == ()
    assert routes["billing"].allows(identity("a.example"))
    assert not routes["billing"].allows(identity("b.example"))
    assert not routes["billing"].allows(None)  # fail closed
    assert routes["default"].allows(None)


def test_internal_fields_are_removed_and_read() -> None:
    fields = [(b"accept", b"*/*"), (b"ptproxy-route", b"billing"), (b"ptproxy-client-address", b"10.1.2.3")]
    assert internal_fields(fields) == ("billing", b"10.1.2.3", [(b"accept", b"*/*")])
    assert internal_fields([(b"accept", b"*/*")]) == (DEFAULT_ROUTE, None, [(b"accept", b"*/*")])


def test_path_rules_first_match_wins_and_rewrite_keeps_the_query() -> None:
    config = server_config(
        {
            "routes": [
                {
                    "name": "default",
                    "paths": [
                        {"prefix": "/v2/", "rewrite": "/", "origins": ["127.0.0.1:2001"]},
                        {"prefix": "/v2", "rewrite": "/old"},
                        {"prefix": "/static/"},
                    ],
                }
            ]
        }
    )
    spec = build_routes(config)["default"]
    assert spec.plan(b"/v2/users?x=/v2/") == (0, b"/users?x=/v2/")
    assert spec.plan(b"/v2?q") == (1, b"/old?q")
    assert spec.plan(b"/v2x") == (1, b"/oldx")
    assert spec.plan(b"/static/a.css") == (2, b"/static/a.css")
    assert spec.plan(b"/other?/v2/") == (None, b"/other?/v2/")  # the query never matches


def test_rewrite_path_joins_slashes() -> None:
    assert rewrite_path(b"/v2/x", b"/v2", b"/") == b"/x"
    assert rewrite_path(b"/v2/x", b"/v2/", b"/api/") == b"/api/x"
    assert rewrite_path(b"/v2", b"/v2", b"/") == b"/"


def test_runtime_path_rule_with_origins_gets_its_own_group() -> None:
    config = server_config(
        {"routes": [{"name": "default", "paths": [{"prefix": "/v2/", "origins": ["127.0.0.1:1001", "127.0.0.1:3"]}]}]}
    )
    runtime = RouteRuntime(build_routes(config)["default"], config)
    group, path = runtime.plan(b"/v2/a")
    assert [o.address for o in group.origins] == ["127.0.0.1:1001", "127.0.0.1:3"]
    # An address in both pools is one origin (one health state, one connection pool).
    assert group.origins[0] is runtime.group.origins[0]
    assert runtime.plan(b"/a")[0] is runtime.group
    assert len(runtime.origins) == 3


# -- balancing ----------------------------------------------------------------------------------


@dataclass
class Fake:
    address: str
    in_flight: int = 0


ORIGINS = [Fake("o1:1"), Fake("o2:1"), Fake("o3:1")]


def test_round_robin_spreads_exactly() -> None:
    rr = RoundRobin()
    picks = Counter(rr.pick(ORIGINS, "").address for _ in range(30))
    assert picks == {"o1:1": 10, "o2:1": 10, "o3:1": 10}


def test_least_requests_prefers_the_idle_and_rotates_ties() -> None:
    lr = LeastRequests()
    busy = [Fake("o1:1", 5), Fake("o2:1", 0), Fake("o3:1", 2)]
    assert {lr.pick(busy, "").address for _ in range(10)} == {"o2:1"}
    idle = [Fake("a:1"), Fake("b:1"), Fake("c:1")]
    assert Counter(lr.pick(idle, "").address for _ in range(30)) == {"a:1": 10, "b:1": 10, "c:1": 10}


def test_random_uses_its_rng() -> None:
    picks = iter([2, 0])
    rnd = RandomChoice(lambda n: next(picks))
    assert rnd.pick(ORIGINS, "").address == "o3:1"
    assert rnd.pick(ORIGINS, "").address == "o1:1"


def test_peer_hash_is_sticky_and_moves_only_the_peers_of_a_down_origin() -> None:
    ph = PeerHash()
    peers = [f"peer-{i}.example" for i in range(60)]
    first = {p: ph.pick(ORIGINS, p).address for p in peers}
    assert first == {p: PeerHash().pick(ORIGINS, p).address for p in peers}  # stable
    assert len(set(first.values())) == 3  # spread over all of them
    remaining = [o for o in ORIGINS if o.address != "o2:1"]
    for p in peers:
        moved = ph.pick(remaining, p).address
        if first[p] != "o2:1":
            assert moved == first[p]


def test_make_balancer_names() -> None:
    assert isinstance(make_balancer("RoundRobin"), RoundRobin)
    assert isinstance(make_balancer("LeastRequests"), LeastRequests)
    assert isinstance(make_balancer("Random"), RandomChoice)
    assert isinstance(make_balancer("PeerHash"), PeerHash)


# -- health ---------------------------------------------------------------------------------------


def test_passive_down_then_backoff_trials() -> None:
    h = OriginHealth()
    assert h.up and h.available(0.0)
    assert h.connect_failed(10.0) == "DOWN"
    assert not h.available(10.5) and h.retry_in(10.5) == pytest.approx(0.5)
    assert h.available(11.0)
    h.chosen(11.0)  # one trial per backoff period
    assert not h.available(11.0)
    assert h.connect_failed(11.1) is None  # the trial failed: backoff doubles
    assert not h.available(13.0) and h.available(13.1)
    h.chosen(13.1)
    assert h.connect_failed(13.2) is None
    assert not h.available(17.1) and h.available(17.2)  # 4 s
    h.chosen(17.2)
    assert h.connected(17.3) == "UP"
    assert h.available(17.3) and h.retry_in(17.3) is None


def test_passive_failures_in_flight_do_not_stretch_the_backoff() -> None:
    h = OriginHealth()
    h.connect_failed(0.0)
    for t in (0.01, 0.02, 0.03):  # other requests that were connecting at the same time
        assert h.connect_failed(t) is None
    assert h.available(1.0)


def test_backoff_is_capped() -> None:
    h = OriginHealth(backoff_max=30.0)
    now = 0.0
    h.connect_failed(now)
    for _ in range(10):
        now += h.retry_in(now) or 0.0
        h.chosen(now)
        h.connect_failed(now)
    assert h.retry_in(now) == pytest.approx(30.0)


def test_active_probe_thresholds() -> None:
    h = OriginHealth(Health(path="/h", down_after=3, up_after=2))
    assert h.probe_result(False, 1) is None
    assert h.probe_result(False, 2) is None
    assert h.probe_result(True, 3) is None  # resets the failure count
    assert h.probe_result(False, 4) is None
    assert h.probe_result(False, 5) is None
    assert h.probe_result(False, 6) == "DOWN"
    assert not h.available(100.0)  # only probes bring it back, not time
    assert h.retry_in(100.0) is None
    assert h.probe_result(True, 7) is None
    assert h.probe_result(True, 8) == "UP"


def test_active_passive_marking_and_no_passive_recovery() -> None:
    h = OriginHealth(Health(path="/h", down_after=3, up_after=2))
    h.probe_result(True, 0)
    assert h.connect_failed(1) == "DOWN"  # at once, passive
    assert h.connected(2) is None  # a lucky connection does not count: probes decide
    assert h.probe_result(True, 3) is None  # the good probe before the failure was forgotten
    assert h.probe_result(True, 4) == "UP"


# -- the pending queue ----------------------------------------------------------------------------


def _runtime(queue: dict[str, int] | None) -> RouteRuntime:
    route: dict[str, object] = {"name": "default"}
    if queue is not None:
        route["queue"] = queue
    config = server_config({"routes": [route]})
    return RouteRuntime(build_routes(config)["default"], config)


def test_without_a_queue_a_down_pool_still_tries_an_origin() -> None:
    async def main() -> None:
        runtime = _runtime(None)
        for origin in runtime.origins.values():
            origin.health.connect_failed(0.0)
            origin.health._retry_at = 1e12  # far future: never available by backoff
        tried: set[object] = set()
        first = await runtime.group.choose("", tried, None)  # type: ignore[arg-type]
        tried.add(first)
        second = await runtime.group.choose("", tried, None)  # type: ignore[arg-type]
        assert {first, second} == set(runtime.origins.values())
        tried.add(second)
        failure = UpstreamError("last")
        with pytest.raises(UpstreamError) as info:
            await runtime.group.choose("", tried, failure)  # type: ignore[arg-type]
        assert info.value is failure

    asyncio.run(main())


def test_queue_timeout_overflow_and_wake() -> None:
    async def main() -> None:
        runtime = _runtime({"max_pending": 1, "pending_timeout": 300})
        origins = list(runtime.origins.values())
        runtime.start()
        for origin in origins:
            origin.health = OriginHealth(Health(path="/h"))  # only a probe brings them back
            origin.health.connect_failed(0.0)
        with pytest.raises(NoOriginAvailable, match="within 300 ms"):
            await runtime.group.choose("", set(), None)
        waiting = asyncio.ensure_future(runtime.group.choose("", set(), None))
        await asyncio.sleep(0.05)
        assert runtime.pending == 1
        with pytest.raises(NoOriginAvailable, match="queue is full"):
            await runtime.group.choose("", set(), None)
        for _ in range(2):
            origins[1].probed(None)  # up_after = 2 good probes: UP, and the waiter wakes
        assert await asyncio.wait_for(waiting, 5) is origins[1]
        assert runtime.pending == 0
        runtime.close()

    asyncio.run(main())


def test_a_waiting_request_becomes_the_trial_when_a_backoff_ends() -> None:
    async def main() -> None:
        runtime = _runtime({"max_pending": 4, "pending_timeout": 20000})
        origins = list(runtime.origins.values())
        for i, origin in enumerate(origins):
            origin.health = OriginHealth(backoff_min=0.05 if i == 1 else 1000.0)
            origin.health.connect_failed(asyncio.get_running_loop().time())
        # The first origin was already tried by this request; the second's backoff ends soon.
        chosen = await asyncio.wait_for(runtime.group.choose("", {origins[0]}, None), 10)
        assert chosen is origins[1]
        assert not chosen.health.available(asyncio.get_running_loop().time())  # one trial at a time

    asyncio.run(main())


def test_choose_now_answers_as_choose_would_without_waiting() -> None:
    """The server end's per-request shortcut: the origin choose() would return at once, or None
    where choose() has to wait or fail (then the caller awaits choose())."""

    async def main() -> None:
        runtime = _runtime({"max_pending": 4, "pending_timeout": 300})
        origins = list(runtime.origins.values())
        assert runtime.group.choose_now("", set()) is origins[0]  # round robin, as choose() goes on
        assert await runtime.group.choose("", set(), None) is origins[1]
        assert runtime.group.choose_now("", {origins[0]}) is origins[1]
        for origin in origins:
            origin.health = OriginHealth(Health(path="/h"))  # only a probe brings them back
            origin.health.connect_failed(0.0)
        assert runtime.group.choose_now("", set()) is None
        with pytest.raises(NoOriginAvailable):
            await runtime.group.choose("", set(), None)

    asyncio.run(main())


def test_choose_now_with_one_origin_answers_as_the_balancer_would() -> None:
    """A group of one origin (handed out without the balancer while it is UP): that origin while
    it is UP and untried; DOWN, the usual path (its backoff over: a trial, marked as one); tried
    already, None (choose() then decides)."""

    async def main() -> None:
        for balance in ("RoundRobin", "LeastRequests", "PeerHash", "Random"):
            config = server_config(
                {"general": {"http_connect_address": "127.0.0.1:1001"}, "routes": [{"name": "default", "balance": balance}]}
            )
            runtime = RouteRuntime(build_routes(config)["default"], config)
            (origin,) = runtime.origins.values()
            assert runtime.group.choose_now("peer", set()) is origin
            assert runtime.group.choose_now("peer", set()) is origin
            assert runtime.group.choose_now("peer", {origin}) is None
            origin.health.connect_failed(0.0)  # DOWN, its backoff over long ago (fake clock)
            assert runtime.group.choose_now("peer", set()) is origin
            assert not origin.health.available(time.monotonic())  # taken as its one trial
            origin.health.connected(0.0)
            assert runtime.group.choose_now("peer", set()) is origin

    asyncio.run(main())


def test_take_idle_hands_out_the_pooled_connection_acquire_would() -> None:
    """Origin.take_idle: the most recent usable idle connection (a stale one closed), counted as
    a successful connection as acquire() counts it; None when acquire() would have to connect."""

    class FakeConn:
        def __init__(self) -> None:
            self.is_closed = False
            self.at_eof = False
            self.parser: object = None

        def has_buffered_input(self) -> bool:
            return False

        def close(self) -> None:
            self.is_closed = True

    async def main() -> None:
        runtime = _runtime(None)
        origin = next(iter(runtime.origins.values()))
        assert origin.take_idle() is None
        stale, fresh = FakeConn(), FakeConn()
        origin.pool.release(stale)  # type: ignore[arg-type]
        origin.pool.release(fresh)  # type: ignore[arg-type]
        origin.health.connect_failed(0.0)
        assert not origin.health.up
        assert origin.take_idle() is fresh
        assert origin.health.up  # as after acquire(): the origin answered on it
        stale.at_eof = True  # the origin closed it while it was idle
        assert origin.take_idle() is None
        assert stale.is_closed
        origin.close()

    asyncio.run(main())
