"""The server end's route table: which route a request takes, who may use it, and which pool and
path it goes to (sans-IO).

The default route is ``[general] http_connect_address`` with the options of a ``[[routes]]
name = "default"`` entry when there is one (its ``request_headers`` falling back to ``[system]
request_headers``); every other ``[[routes]]`` entry is a route of its own. A request names its
route in the internal ``ptproxy-route`` field (absent: the default route); the internal fields are
removed here, before anything reaches an origin. Path rules are tried in order: the first prefix
that matches the path (query ignored) picks the rule's pool, and its ``rewrite`` replaces the
prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ptproxy.ops.config import Config, Health, Queue, Route, parse_socket_address
from ptproxy.tunnel import PeerIdentity
from ptproxy.wire.h3map import CLIENT_ADDRESS_FIELD, INTERNAL_FIELDS, ROUTE_FIELD

__all__ = [
    "DEFAULT_ROUTE",
    "PathPlan",
    "RouteSpec",
    "build_routes",
    "internal_fields",
    "rewrite_path",
]

DEFAULT_ROUTE = "default"
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PathPlan:
    """One ``[[routes.paths]]`` rule; ``origins`` None: the route's own pool."""

    prefix: bytes
    rewrite: bytes | None
    origins: tuple[Address, ...] | None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Everything the server end needs to know of one route, resolved from the config."""

    name: str
    origins: tuple[Address, ...]
    balance: str
    allowed_peers: frozenset[str] | None
    request_headers: tuple[str, ...]
    paths: tuple[PathPlan, ...]
    health: Health | None
    queue: Queue | None  # None: no waiting, a request with no UP origin tries a DOWN one

    def allows(self, identity: PeerIdentity | None) -> bool:
        """May this peer use the route? Without ``allowed_peers`` any authenticated peer may;
        with it, a session whose certificate name is unknown may not (fail closed)."""
        if self.allowed_peers is None:
            return True
        return identity is not None and identity.name in self.allowed_peers

    def plan(self, path: bytes) -> tuple[int | None, bytes]:
        """(index of the matching path rule or None, the path the origin gets)."""
        for i, rule in enumerate(self.paths):
            if _path_only(path).startswith(rule.prefix):
                return i, path if rule.rewrite is None else rewrite_path(path, rule.prefix, rule.rewrite)
        return None, path


def _path_only(target: bytes) -> bytes:
    return target.split(b"?", 1)[0]


def rewrite_path(target: bytes, prefix: bytes, rewrite: bytes) -> bytes:
    """``target`` with ``prefix`` replaced by ``rewrite``; the query string is kept. A ``/``
    ending the replacement and one starting the rest become one (``/v2`` → ``/`` on ``/v2/x``
    gives ``/x``, not ``//x``)."""
    rest = target[len(prefix) :]
    if rewrite.endswith(b"/") and rest.startswith(b"/"):
        rest = rest[1:]
    out = rewrite + rest
    return out if out.startswith(b"/") else b"/" + out


def _addresses(texts: list[str]) -> tuple[Address, ...]:
    return tuple(parse_socket_address(t) for t in texts)


def _spec(route: Route, origins: tuple[Address, ...], headers: Sequence[str] | None) -> RouteSpec:
    paths = tuple(
        PathPlan(
            rule.prefix.encode(),
            rule.rewrite.encode() if rule.rewrite is not None else None,
            _addresses(rule.origins) if rule.origins is not None else None,
        )
        for rule in route.paths or []
    )
    return RouteSpec(
        name=route.name,
        origins=origins,
        balance=route.effective_balance,
        allowed_peers=frozenset(route.allowed_peers) if route.allowed_peers is not None else None,
        request_headers=tuple(headers or ()),
        paths=paths,
        health=route.health,
        queue=route.queue,
    )


def build_routes(config: Config) -> dict[str, RouteSpec]:
    """Every route of a server-end config by name, the default one included."""
    default = config.route(DEFAULT_ROUTE) or Route(name=DEFAULT_ROUTE)
    headers = default.request_headers if default.request_headers is not None else config.system.request_headers
    routes = {DEFAULT_ROUTE: _spec(default, tuple(config.general.http_connects), list(headers or []))}
    for route in config.routes:
        if route.name != DEFAULT_ROUTE:
            routes[route.name] = _spec(route, _addresses(route.origins or []), route.request_headers)
    return routes


def internal_fields(
    fields: list[tuple[bytes, bytes]],
) -> tuple[str, bytes | None, list[tuple[bytes, bytes]]]:
    """(route name, client address or None, the fields without the internal ones)."""
    route = DEFAULT_ROUTE
    client_address: bytes | None = None
    rest: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if name == ROUTE_FIELD:
            route = value.decode("latin-1")
        elif name == CLIENT_ADDRESS_FIELD:
            client_address = value
        elif name not in INTERNAL_FIELDS:
            rest.append((name, value))
    return route, client_address, rest
