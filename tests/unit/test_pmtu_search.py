"""The path MTU search (ptproxy/tunnel/pmtu.py), sans-IO: a simulated path that carries datagrams
up to some size, probes answered or lost, the clock given."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from ptproxy.tunnel.pmtu import BASE_SIZE, CEILING, MAX_PROBES, RAISE_INTERVAL, STEP, PmtuSearch


def run_search(search: PmtuSearch, path_mtu: int, now: float = 0.0, limit: int = 100) -> list[int]:
    """Answer probes as a path carrying up to ``path_mtu`` would; the sizes probed, in order."""
    sent = []
    for _ in range(limit):
        size = search.next_probe(now)
        if size is None:
            break
        sent.append(size)
        if size <= path_mtu:
            search.on_acked(size, now)
        else:
            search.on_lost(size, now)
    return sent


def test_an_ethernet_path_is_confirmed_with_one_probe() -> None:
    search = PmtuSearch()
    assert run_search(search, 1500) == [CEILING]
    assert search.confirmed == CEILING
    assert search.next_probe(1.0) is None  # done until the raise interval
    assert search.counts == {"sent": 1, "acked": 1, "lost": 0}


def test_a_path_that_carries_only_the_base_size_stays_there() -> None:
    search = PmtuSearch()
    sent = run_search(search, BASE_SIZE)
    assert search.confirmed == BASE_SIZE
    assert not search.searching
    # Every size tried above the base was given up after MAX_PROBES losses, none acked.
    assert all(size > BASE_SIZE for size in sent)
    assert len(sent) % MAX_PROBES == 0
    assert search.counts["acked"] == 0


@given(st.integers(min_value=BASE_SIZE, max_value=1600))
def test_the_search_ends_within_step_below_the_path(path_mtu: int) -> None:
    search = PmtuSearch()
    sent = run_search(search, path_mtu)
    assert len(sent) < 40  # a binary search, not a walk
    assert search.confirmed <= min(path_mtu, CEILING)
    assert min(path_mtu, CEILING) - search.confirmed <= STEP
    assert all(BASE_SIZE < size <= CEILING for size in sent)


def test_the_ceiling_is_the_peers_limit_when_lower() -> None:
    search = PmtuSearch(ceiling=1350)
    assert run_search(search, 1500) == [1350]
    assert search.confirmed == 1350


def test_one_probe_at_a_time() -> None:
    search = PmtuSearch()
    assert search.next_probe(0.0) == CEILING
    assert search.next_probe(0.0) is None
    search.on_lost(CEILING, 0.0)
    assert search.next_probe(0.0) == CEILING  # tried again: one loss is not enough


def test_a_late_loss_of_a_size_confirmed_since_changes_nothing() -> None:
    search = PmtuSearch()
    search.on_acked(1400, 0.0)
    search.on_lost(1300, 0.0)
    assert search.confirmed == 1400
    assert search.failures == 0


def test_the_search_runs_again_after_the_raise_interval() -> None:
    search = PmtuSearch()
    run_search(search, 1300)
    assert search.confirmed < CEILING
    assert search.next_probe(RAISE_INTERVAL - 1) is None
    # The path grew meanwhile.
    run_search(search, 1500, now=RAISE_INTERVAL + 1)
    assert search.confirmed == CEILING


def test_a_black_hole_falls_back_to_the_base_size_and_waits() -> None:
    search = PmtuSearch()
    run_search(search, 1500)
    search.on_black_hole(10.0)
    assert search.confirmed == BASE_SIZE
    assert search.next_probe(11.0) is None
    assert search.next_probe(10.0 + RAISE_INTERVAL) == CEILING


@given(
    path_mtu=st.integers(BASE_SIZE, CEILING + 200),
    ops=st.lists(st.tuples(st.sampled_from(["probe", "answer", "cancel", "black_hole", "wait"]),
                           st.floats(0, 2 * RAISE_INTERVAL)), max_size=40),
)  # fmt: skip
def test_may_probe_says_whether_next_probe_would_give_one(path_mtu: int, ops: list[tuple[str, float]]) -> None:
    # The sender's cheap check on every send must agree with next_probe in every state, or a
    # probe is never sent (False when one is due) or the check saves nothing (True otherwise,
    # except to let a resting search whose time has come restart).
    search, now = PmtuSearch(), 0.0
    for op, dt in ops:
        check_may_probe(search, now)
        if op == "probe":
            search.next_probe(now)
        elif op == "answer" and search.in_flight is not None:
            size = search.in_flight
            (search.on_acked if size <= path_mtu else search.on_lost)(size, now)
        elif op == "cancel" and search.in_flight is not None:
            search.cancel(search.in_flight)
        elif op == "black_hole":
            search.on_black_hole(now)
        else:
            now += dt
    check_may_probe(search, now)


def check_may_probe(search: PmtuSearch, now: float) -> None:
    twin = copy.deepcopy(search)
    gives = twin.next_probe(now) is not None
    if search.may_probe(now):
        assert gives or (search.resume_at is not None and twin.resume_at is None)  # a restart
    else:
        assert not gives and twin == search  # next_probe would neither give a probe nor change
