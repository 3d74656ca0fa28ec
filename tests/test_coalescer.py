"""The coalescing state machine on its own: rounds, hand-overs, failures, abandonment."""

from __future__ import annotations

from pgcounter.coalesce import Coalescer, Waiter, split


class Recorded(Waiter):
    __slots__ = ("woken",)

    def __init__(self) -> None:
        super().__init__()
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def test_split_gives_each_caller_the_end_of_its_own_range() -> None:
    assert split(10, [1]) == [10]
    assert split(10, [2, 3, 5]) == [2 + 0, 5, 10]
    assert split(107, [1, 1, 5]) == [101, 102, 107]


def test_a_lone_caller_leads_at_once_and_the_project_goes_idle() -> None:
    c = Coalescer()
    assert c.join(1, 1, Recorded) is None
    assert c.round_done(1, [(1, None)], 41) == 41
    assert c.join(1, 1, Recorded) is None  # idle again: the next caller leads at once


def test_callers_during_a_round_form_the_next_one_led_by_the_first() -> None:
    c = Coalescer()
    assert c.join(1, 1, Recorded) is None
    a = c.join(1, 2, Recorded)
    b = c.join(1, 3, Recorded)
    assert a is not None
    assert b is not None
    assert c.round_done(1, [(1, None)], 1) == 1
    assert a.round == [(2, a), (3, b)]  # a leads the next round, for both
    assert (a.woken, b.woken) == (1, 0)
    assert c.round_done(1, a.round, 6) == 3  # a owns 2..3
    assert (b.woken, b.result()) == (1, 6)  # b owns 4..6


def test_a_failed_round_fails_its_followers_only() -> None:
    c = Coalescer()
    c.join(1, 1, Recorded)
    a = c.join(1, 1, Recorded)
    assert a is not None
    c.round_done(1, [(1, None)], 1)
    assert a.round is not None
    later = c.join(1, 1, Recorded)  # queued while a's round is in flight
    b_round = a.round
    c.round_failed(1, b_round, RuntimeError("boom"))
    assert later is not None
    assert later.round == [(1, later)]  # the next round is handed on, not failed


def test_an_interrupted_leader_requeues_its_followers_in_front() -> None:
    c = Coalescer()
    c.join(1, 1, Recorded)
    a = c.join(1, 1, Recorded)
    b = c.join(1, 1, Recorded)
    assert a is not None
    assert b is not None
    c.round_done(1, [(1, None)], 1)
    assert a.round is not None
    late = c.join(1, 1, Recorded)
    assert late is not None
    c.round_abandoned(1, a.round)  # a was cancelled mid-call
    assert b.round == [(1, b), (1, late)]
    assert b.error is None


def test_a_waiter_handed_a_round_then_abandoning_passes_it_on() -> None:
    c = Coalescer()
    c.join(1, 1, Recorded)
    a = c.join(1, 1, Recorded)
    b = c.join(1, 1, Recorded)
    assert a is not None
    assert b is not None
    c.round_done(1, [(1, None)], 1)
    assert a.round is not None
    c.abandon(1, a)  # cancelled before it could lead
    assert b.round == [(1, b)]  # b leads what is left, without a's delta


def test_an_abandoned_waiter_is_left_out_of_the_next_round() -> None:
    c = Coalescer()
    c.join(1, 1, Recorded)
    a = c.join(1, 1, Recorded)
    b = c.join(1, 1, Recorded)
    assert a is not None
    assert b is not None
    c.abandon(1, a)
    c.round_done(1, [(1, None)], 1)
    assert a.round is None
    assert b.round == [(1, b)]


def test_everyone_abandoning_leaves_the_project_idle() -> None:
    c = Coalescer()
    c.join(1, 1, Recorded)
    a = c.join(1, 1, Recorded)
    assert a is not None
    c.abandon(1, a)
    c.round_done(1, [(1, None)], 1)
    assert c.join(1, 1, Recorded) is None
