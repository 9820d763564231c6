"""Routes chosen at the client end, checked at the origins (real processes: both ends, four
origins): a route's own listener; Host-selected routes on the general listener, exact and
wildcard; a forged route or client-address field from the HTTP/1.1 client is dropped.

Origins: ``default`` (the server's http_connect_address), ``billing`` (the client listener of its
own), ``api`` (hosts api.example.com and *.api.example.com) and ``web`` (*.example.com).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.ends import echo, get, origin_targets, start_origins
from tests.support.h1client import header_all
from tests.support.pair import OriginProcess, Pair, free_port

ROUTES = ("default", "billing", "api", "web")


@pytest.fixture()
def origins(tmp_path: Path) -> Iterator[dict[str, OriginProcess]]:
    started = start_origins(tmp_path / "origins", len(ROUTES))
    yield dict(zip(ROUTES, started, strict=True))
    for proc in started:
        proc.close()


@pytest.fixture()
def routed(make_pair: Callable[..., Pair], origins: dict[str, OriginProcess]) -> tuple[Pair, int]:
    """A pair with the routes above; returns it and the billing listener's port."""
    billing_port = free_port()
    client = {
        "routes": [
            {"name": "billing", "http_bind_address": f"127.0.0.1:{billing_port}"},
            {"name": "api", "hosts": ["api.example.com", "*.api.example.com"]},
            {"name": "web", "hosts": ["*.example.com"]},
        ]
    }
    server = {
        "system": {"request_headers": ["X-Forwarded-For"]},
        "routes": [
            {"name": name, "origins": [f"127.0.0.1:{origins[name].port}"], "request_headers": ["X-Forwarded-For"]}
            for name in ROUTES[1:]
        ],
    }
    pair = make_pair(client, server, origin_port=origins["default"].port)
    return pair, billing_port


def _only_at(origins: dict[str, OriginProcess], marker: str) -> list[str]:
    """The routes whose origin received a request with ``marker`` in its target."""
    return [name for name, proc in origins.items() if origin_targets(proc, marker)]


def test_each_listener_reaches_its_route(routed: tuple[Pair, int], origins: dict[str, OriginProcess]) -> None:
    pair, billing_port = routed
    assert get(pair.http_port, "/bytes/10?m=general-listener") == 200
    assert get(billing_port, "/bytes/10?m=billing-listener") == 200
    # On a route's own listener the Host does not matter: api.example.com stays on billing.
    assert get(billing_port, "/bytes/10?m=billing-by-host", {"Host": "api.example.com"}) == 200
    assert _only_at(origins, "m=general-listener") == ["default"]
    assert _only_at(origins, "m=billing-listener") == ["billing"]
    assert _only_at(origins, "m=billing-by-host") == ["billing"]
    log = pair.client_log()
    assert f"127.0.0.1:{billing_port} (route billing)" in log, log[-3000:]
    assert f"127.0.0.1:{pair.http_port} (route by Host, else default)" in log, log[-3000:]


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("api.example.com", "api"),  # exact
        ("API.Example.com:8080", "api"),  # case and port ignored
        ("v2.api.example.com", "api"),  # *.api.example.com: the longer wildcard wins
        ("www.example.com", "web"),  # *.example.com
        ("a.b.example.com", "web"),  # any depth
        ("example.com", "default"),  # a wildcard does not match its own domain
        ("other.test", "default"),
    ],
)
def test_host_selects_the_route_on_the_general_listener(
    routed: tuple[Pair, int], origins: dict[str, OriginProcess], host: str, route: str
) -> None:
    pair, _ = routed
    marker = f"m=host-{host.replace(':', '-')}"
    assert get(pair.http_port, f"/bytes/10?{marker}", {"Host": host}) == 200
    assert _only_at(origins, marker) == [route]


def test_a_forged_route_or_address_from_the_client_is_dropped(
    routed: tuple[Pair, int], origins: dict[str, OriginProcess]
) -> None:
    pair, billing_port = routed
    forged = {"ptproxy-route": "billing", "ptproxy-client-address": "203.0.113.66", "X-Forwarded-For": "203.0.113.67"}
    seen = echo(pair.http_port, "/echo?m=forged-general", forged)
    assert _only_at(origins, "m=forged-general") == ["default"]
    _assert_clean(seen["headers"])
    # On a route listener too: the route stays the listener's, the address the real one.
    seen = echo(billing_port, "/echo?m=forged-billing", {**forged, "ptproxy-route": "api"})
    assert _only_at(origins, "m=forged-billing") == ["billing"]
    _assert_clean(seen["headers"])


def _assert_clean(headers: list[list[str]]) -> None:
    names = [n.lower() for n, _ in headers]
    assert "ptproxy-route" not in names and "ptproxy-client-address" not in names, headers
    # The address the client end saw (the test's own loopback connection), not a forged one.
    assert header_all(headers, "X-Forwarded-For") == ["127.0.0.1"], headers
