"""The dial trigger (a waiting request hurries the dialer, at most once per gap) and which
unprocessed requests the client end sends again (sans-IO: times are plain numbers)."""

from __future__ import annotations

from ptproxy.client.dialer import REFUSED_DIAL_GAP, REQUEST_DIAL_GAP, DialTrigger, first_resend_gap
from ptproxy.client.listener import resend_allowed
from ptproxy.tunnel import H3_REQUEST_REJECTED

GAP = 0.1


def test_a_request_during_the_sleep_dials_at_once() -> None:
    trigger = DialTrigger(GAP)
    trigger.attempt_started(10.0)
    trigger.sleeping()
    assert trigger.on_request(12.0) == 12.0
    assert trigger.act(12.0) == "dial"


def test_a_burst_of_requests_costs_one_action_per_gap() -> None:
    trigger = DialTrigger(GAP)
    trigger.attempt_started(10.0)
    trigger.sleeping()
    assert trigger.act(10.5) == "dial"
    trigger.attempt_started(10.5)
    # Requests just after that attempt started wait for the gap, then hurry its handshake once.
    assert trigger.on_request(10.52) == 10.5 + GAP
    assert trigger.act(10.55) is None  # too early: nothing
    assert trigger.act(10.5 + GAP) == "resend"
    assert trigger.on_request(10.61) == 10.5 + 2 * GAP


def test_an_attempt_the_dialer_started_itself_counts_towards_the_gap() -> None:
    trigger = DialTrigger(GAP)
    trigger.attempt_started(5.0)
    trigger.sleeping()
    assert trigger.on_request(5.01) == 5.0 + GAP


def test_nothing_to_do_with_a_session_up_or_the_dialer_stopped() -> None:
    trigger = DialTrigger(GAP)
    trigger.up()
    assert trigger.on_request(1.0) is None
    assert trigger.act(1.0) is None
    trigger.stopped()
    assert trigger.on_request(2.0) is None


def test_rejected_requests_go_again_whatever_their_method() -> None:
    for method in (b"GET", b"POST", b"PATCH"):
        assert resend_allowed(method, H3_REQUEST_REJECTED, reset=False, before_handshake=False)


def test_after_a_stateless_reset_only_idempotent_methods_go_again() -> None:
    for method in (b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"):
        assert resend_allowed(method, None, reset=True, before_handshake=False)
    for method in (b"POST", b"PATCH", b"CONNECT"):
        assert not resend_allowed(method, None, reset=True, before_handshake=False)


def test_a_0rtt_request_lost_in_the_handshake_goes_again_when_replay_safe() -> None:
    assert resend_allowed(b"GET", None, reset=False, before_handshake=True)
    assert not resend_allowed(b"PUT", None, reset=False, before_handshake=True)


def test_a_request_lost_with_an_established_session_does_not_go_again() -> None:
    assert not resend_allowed(b"GET", None, reset=False, before_handshake=False)
    assert not resend_allowed(b"GET", 0x10C, reset=False, before_handshake=False)  # H3_REQUEST_CANCELLED


# -- while the server end refuses (ICMP port unreachable: a restart) --------------------------------

REFUSED_GAP = 0.025
WINDOW = 1.0
FRESH = 0.5


def _refusing() -> DialTrigger:
    return DialTrigger(GAP, refused_gap=REFUSED_GAP, window=WINDOW, fresh=FRESH)


def test_refusals_shorten_the_gap_between_resends() -> None:
    trigger = _refusing()
    trigger.attempt_started(10.0)
    assert trigger.on_request(10.01) == 10.0 + GAP
    trigger.refused(10.01)
    assert trigger.on_request(10.01) == 10.0 + REFUSED_GAP
    assert trigger.act(10.0 + REFUSED_GAP) == "resend"
    assert trigger.act(10.0 + REFUSED_GAP + 0.01) is None  # still at most one per (short) gap


def test_the_short_gap_lasts_the_window_after_the_first_refusal() -> None:
    trigger = _refusing()
    trigger.attempt_started(0.0)
    now, resends = 0.0, 0
    while now < 3.0:
        trigger.refused(now)  # every resend is refused: the server end is still starting
        at = trigger.on_request(now)
        assert at is not None
        now = at
        if trigger.act(now) == "resend":
            resends += 1
    # Bounded: one resend per short gap within the window, then one per normal gap.
    assert resends <= WINDOW / REFUSED_GAP + 1 + (3.0 - WINDOW) / GAP + 1
    assert trigger.gap_at(2.0) == GAP
    assert trigger.gap_at(0.5) == REFUSED_GAP


def test_an_old_refusal_no_longer_shortens_the_gap() -> None:
    trigger = _refusing()
    trigger.refused(1.0)
    assert trigger.gap_at(1.0 + FRESH) == REFUSED_GAP
    assert trigger.gap_at(1.0 + FRESH + 0.01) == GAP  # silent since: a blackout, not a restart


def test_a_session_gives_the_next_outage_a_window_of_its_own() -> None:
    trigger = _refusing()
    trigger.refused(1.0)
    trigger.up()
    trigger.attempt_started(5.0)
    trigger.refused(5.0)
    assert trigger.gap_at(5.5) == REFUSED_GAP
    trigger.refused(6.5)
    assert trigger.gap_at(6.5) == GAP  # 1.5 s after this outage's first refusal


def test_without_refusals_the_gap_is_unchanged() -> None:
    trigger = DialTrigger(GAP)
    trigger.attempt_started(10.0)
    assert trigger.gap_at(10.0) == GAP
    assert trigger.on_request(10.01) == 10.0 + GAP


def test_the_first_resend_of_an_attempt_may_come_one_round_trip_after_its_initial() -> None:
    """A blackout ends just after an attempt began: its Initial, unanswered after about a round
    trip, was lost; a waiting request sends it again then, not a whole gap after it."""
    trigger = DialTrigger(GAP)
    trigger.first_gap = first_resend_gap(0.05)  # the lost session's smoothed RTT: 50 ms
    assert trigger.first_gap == 0.0625
    trigger.attempt_started(10.0)
    assert trigger.on_request(10.03) == 10.0625
    assert trigger.act(10.05) is None
    assert trigger.act(10.0625) == "resend"
    # One early action per attempt: the gap after it.
    assert trigger.on_request(10.07) == 10.0625 + GAP
    assert trigger.act(10.1) is None
    # The next attempt has its own.
    trigger.sleeping()
    assert trigger.act(11.0) == "dial"
    trigger.attempt_started(11.0)  # the request's dial: its Initial may go again as early
    assert trigger.on_request(11.001) == 11.0625


def test_with_requests_waiting_throughout_an_attempt_costs_one_more_resend_at_most() -> None:
    trigger = DialTrigger(GAP)
    trigger.first_gap = first_resend_gap(0.001)  # a LAN: floored at REFUSED_DIAL_GAP
    trigger.attempt_started(0.0)
    now, resends = 0.0, 0
    while now < 5.0:  # max_idle_timeout: the attempt's life
        at = trigger.on_request(now)
        assert at is not None
        now = at
        if trigger.act(now) == "resend":
            resends += 1
    assert resends <= 5.0 / GAP + 2


def test_the_first_gap_stays_within_the_short_and_the_normal_gap() -> None:
    assert first_resend_gap(0.0) is None  # no RTT sample: the normal gap
    assert first_resend_gap(0.001) == REFUSED_DIAL_GAP
    assert first_resend_gap(0.5) == REQUEST_DIAL_GAP
    trigger = DialTrigger(GAP)
    trigger.first_gap = first_resend_gap(0.5)
    trigger.attempt_started(1.0)
    assert trigger.on_request(1.01) == 1.0 + GAP
