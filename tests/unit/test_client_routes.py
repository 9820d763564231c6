"""Route selection at the client end (sans-IO): a route's own listener, else the request's Host on
the general listener (exact names before wildcards, the longest wildcard suffix first), else the
default route; the fields each request carries to the server end; and the order in which the
dialer tries the server ends of ``connect_address``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ptproxy.client import dialer as dialer_module
from ptproxy.client.dialer import Dialer
from ptproxy.client.listener import client_ip, tag_request
from ptproxy.client.routes import DEFAULT_ROUTE, RouteTable, host_name
from ptproxy.ops.config import Route, parse
from ptproxy.wire.h3map import CLIENT_ADDRESS_FIELD, ROUTE_FIELD


def table() -> RouteTable:
    return RouteTable(
        [
            Route(name="billing", http_bind_address="127.0.0.1:20081"),
            Route(name="api", hosts=["api.example.com", "*.api.example.com"]),
            Route(name="wild", hosts=["*.example.com"]),
            Route(name="exact-sub", hosts=["exact.api.example.com"]),
        ]
    )


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("api.example.com", "api"),
        ("v1.api.example.com", "api"),  # longest wildcard suffix beats *.example.com
        ("a.b.api.example.com", "api"),  # any depth
        ("exact.api.example.com", "exact-sub"),  # exact name beats a matching wildcard
        ("www.example.com", "wild"),
        ("deep.www.example.com", "wild"),
        ("example.com", DEFAULT_ROUTE),  # a wildcard does not match the bare domain
        ("other.org", DEFAULT_ROUTE),
        ("notexample.com", DEFAULT_ROUTE),  # a suffix only at a label boundary
        ("localhost", DEFAULT_ROUTE),
    ],
)
def test_host_selects_route(host: str, route: str) -> None:
    assert table().select(host) == route


@pytest.mark.parametrize(
    "host",
    [b"api.example.com:8080", b"API.Example.COM", b"api.example.com.", b"Api.Example.Com.:443", b" api.example.com "],
)
def test_port_case_and_trailing_dot_are_ignored(host: bytes) -> None:
    assert table().select(host) == "api"


def test_no_host_or_no_routes_is_the_default_route() -> None:
    assert table().select(None) == DEFAULT_ROUTE
    assert table().select(b"") == DEFAULT_ROUTE
    assert RouteTable([]).select(b"api.example.com") == DEFAULT_ROUTE


def test_routes_listing_no_host_give_every_host_the_default_route() -> None:
    t = RouteTable([Route(name="billing", hosts=[], http_bind_address="127.0.0.1:9001")])
    for host in (b"billing", b"billing:80", b"[::1]:8080", b" x. ", "billing", b"\xff:1:2"):
        assert t.select(host) == DEFAULT_ROUTE


def test_host_name_normalises_ipv6_literals() -> None:
    assert host_name(b"[::1]:8080") == "[::1]"
    assert host_name("[2001:DB8::1]") == "[2001:db8::1]"
    assert host_name("127.0.0.1:80") == "127.0.0.1"


def test_a_route_listener_is_not_a_host_route() -> None:
    t = table()
    assert [r.name for r in t.listener_routes] == ["billing"]
    assert t.select(b"billing") == DEFAULT_ROUTE


def test_first_route_listing_a_wildcard_keeps_it() -> None:
    # check_routes refuses duplicates; the table must still be deterministic without it.
    t = RouteTable([Route(name="a", hosts=["*.x.org"]), Route(name="b", hosts=["*.x.org"])])
    assert t.select("y.x.org") == "a"


def test_tag_drops_forged_fields_and_adds_ours() -> None:
    forged = [
        (b":method", b"GET"),
        (b"ptproxy-route", b"admin"),
        (b"x-a", b"1"),
        (b"ptproxy-client-address", b"10.9.9.9"),
    ]
    tagged = tag_request(forged, "api", b"192.0.2.7")
    assert tagged == [(b":method", b"GET"), (b"x-a", b"1"), (ROUTE_FIELD, b"api"), (CLIENT_ADDRESS_FIELD, b"192.0.2.7")]


def test_default_route_carries_no_route_field() -> None:
    tagged = tag_request([(b":method", b"GET"), (b"ptproxy-route", b"admin")], DEFAULT_ROUTE, b"::1")
    assert tagged == [(b":method", b"GET"), (CLIENT_ADDRESS_FIELD, b"::1")]


def test_client_ip_is_the_address_without_port() -> None:
    assert client_ip(("127.0.0.1", 5555)) == b"127.0.0.1"
    assert client_ip(("::ffff:192.0.2.1", 5555, 0, 0)) == b"192.0.2.1"
    assert client_ip(("2001:db8::1", 5555, 0, 0)) == b"2001:db8::1"
    assert client_ip(None) is None


# -- the order in which the dialer tries connect_address (failover) ----------------------------


def _dialer(hosts: list[str]) -> Dialer:
    text = f"""
[general]
mode = "Client"
peer_hostname = "server.example.com"
connect_address = {json.dumps(hosts)}
[tls]
ca = "ca.crt"
cert = "client.crt"
key = "client.key"
[system]
connect_interval = 1000
"""
    settings = SimpleNamespace(config=parse(text, path=Path("/etc/ptproxy/client.toml")))
    return Dialer(settings)  # type: ignore[arg-type]  # only .config is read before a dial


def _tried(dialer: Dialer, outcomes: list[bool], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the dialer over ``outcomes`` (True: a session that was then lost; False: a failed
    attempt); the hosts it dialed, with "sleep" where it waited the interval."""
    seen: list[str] = []
    results = iter(outcomes)

    async def attempt(index: int) -> bool:
        seen.append(dialer._hosts[index])
        try:
            return next(results)
        except StopIteration:
            dialer._stopping = True
            return False

    def delay(_interval: float, _rng: object) -> float:
        seen.append("sleep")
        return 0.0

    monkeypatch.setattr(dialer, "_attempt_and_hold", attempt)
    monkeypatch.setattr(dialer_module, "next_retry_delay", delay)
    asyncio.run(dialer.run())
    return seen[:-1]  # the last entry is the attempt that stopped the run


def test_one_host_waits_after_each_failure_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _tried(_dialer(["a"]), [False, False, True, False], monkeypatch) == [
        "a", "sleep", "a", "sleep", "a", "a", "sleep",
    ]


def test_a_failure_moves_to_the_next_host_and_a_full_round_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _tried(_dialer(["a", "b", "c"]), [False, False, False, False], monkeypatch) == [
        "a", "b", "c", "sleep", "a",
    ]


def test_a_lost_session_is_retried_on_its_host_before_moving_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # a fails, b is up then lost, b's retry fails, c fails, a fails: a whole round, then wait.
    assert _tried(_dialer(["a", "b", "c"]), [False, True, False, False, False], monkeypatch) == [
        "a", "b", "b", "c", "a", "sleep",
    ]
