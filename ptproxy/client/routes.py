"""Client mode, sans-IO: which ``[[routes]]`` entry a request takes.

A request on a route's own listener always takes that route. On the general listener its Host
picks one, as nginx ``server_name`` does: exact names first, then wildcards (``*.example.com``
matches any subdomain at any depth, not ``example.com`` itself; the longest suffix wins); no match
is the default route. Host comparison ignores the port, case and a trailing dot, so
``API.example.com.:8080`` is ``api.example.com``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ptproxy.ops.config import Route

__all__ = ["DEFAULT_ROUTE", "RouteTable", "host_name"]

DEFAULT_ROUTE = "default"


def host_name(host: bytes | str) -> str:
    """The name part of a Host value, normalised: no port, lowercase, no trailing dot."""
    text = host.decode("latin-1") if isinstance(host, bytes) else host
    text = text.strip()
    if text.startswith("["):  # an IPv6 literal: "[::1]:8080"
        end = text.find("]")
        text = text[: end + 1] if end >= 0 else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.lower().rstrip(".")


class RouteTable:
    """The routes the client end knows, indexed for Host lookups on the general listener."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[str, str] = {}
        # "*.example.com" is kept as "example.com": a lookup walks the host's parent domains.
        self._wildcard: dict[str, str] = {}
        self._listeners: list[Route] = []
        for route in routes:
            if route.http_bind_address is not None:
                self._listeners.append(route)
            for pattern in route.hosts or []:
                name = pattern.lower().rstrip(".")
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], route.name)
                else:
                    self._exact.setdefault(name, route.name)
        # No route lists a Host: every request takes the default route, and its Host need not be
        # parsed (the usual configuration; one select per request, on the way to the tunnel).
        self._by_host = bool(self._exact or self._wildcard)

    @property
    def listener_routes(self) -> list[Route]:
        """Routes with a listener of their own (``http_bind_address``), in config order."""
        return list(self._listeners)

    def select(self, host: bytes | str | None) -> str:
        """The route for a request on the general listener with this Host value."""
        if not host or not self._by_host:
            return DEFAULT_ROUTE
        name = host_name(host)
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        if self._wildcard:
            # Parents of the name, longest first: the first listed wildcard is the longest match.
            labels = name.split(".")
            for cut in range(1, len(labels)):
                route = self._wildcard.get(".".join(labels[cut:]))
                if route is not None:
                    return route
        return DEFAULT_ROUTE
