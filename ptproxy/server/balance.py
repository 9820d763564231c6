"""Balancing policies of an origin pool: which UP origin takes the next request (sans-IO).

A policy sees the candidates (the pool's origins that can take a request now, in configuration
order), their requests in flight and a key naming the peer; it keeps only its own small state
(a round-robin counter), so it can be tested without sockets or clocks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

__all__ = [
    "Balancer",
    "Candidate",
    "LeastRequests",
    "PeerHash",
    "RandomChoice",
    "RoundRobin",
    "make_balancer",
]


class Candidate(Protocol):
    """What a policy needs to know of an origin."""

    @property
    def address(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


class Balancer(Protocol):
    def pick(self, candidates: Sequence[C], peer_key: str) -> C:
        """One of ``candidates`` (never empty) for a request of the peer named ``peer_key``."""
        ...


class RoundRobin:
    """Each candidate in turn: sequential requests spread exactly evenly."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[C], peer_key: str) -> C:
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice


class LeastRequests:
    """Fewest requests in flight; ties broken round robin (so an idle pool still spreads)."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[C], peer_key: str) -> C:
        n = len(candidates)
        start = self._next % n
        self._next += 1
        # Scanning from a rotating start makes the first of several equally loaded ones vary.
        rotated = [candidates[(start + i) % n] for i in range(n)]
        return min(rotated, key=lambda c: c.in_flight)


class RandomChoice:
    """Uniformly at random; ``rng`` is injectable for tests."""

    def __init__(self, rng: Callable[[int], int] | None = None) -> None:
        self._rng = rng or (lambda n: random.randrange(n))

    def pick(self, candidates: Sequence[C], peer_key: str) -> C:
        return candidates[self._rng(len(candidates))]


class PeerHash:
    """Rendezvous (highest-random-weight) hashing of the peer's name over the candidates.

    A peer keeps its origin while that origin stays a candidate; when one goes DOWN only the
    peers that were on it move, and they come back when it returns. BLAKE2 rather than ``hash()``
    so the mapping is the same in every process (Python salts string hashes)."""

    def pick(self, candidates: Sequence[C], peer_key: str) -> C:
        return max(candidates, key=lambda c: (_weight(peer_key, c.address), c.address))


def _weight(peer_key: str, address: str) -> bytes:
    return hashlib.blake2b(f"{peer_key}\x00{address}".encode(), digest_size=8).digest()


def make_balancer(policy: str) -> Balancer:
    """The policy named as in ``[[routes]] balance``."""
    if policy == "LeastRequests":
        return LeastRequests()
    if policy == "Random":
        return RandomChoice()
    if policy == "PeerHash":
        return PeerHash()
    return RoundRobin()
