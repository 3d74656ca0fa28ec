"""The coalescing state machine on its own: rounds, hand-overs, failures, abandonment."""

from __future__ import annotations

import pytest

from pgcounter.coalesce import Coalescer, Waiter, deltas_by_project


class Recorded(Waiter):
    __slots__ = ("woken",)

    def __init__(self) -> None:
        super().__init__()
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def queued(c: Coalescer, project_id: int = 1, delta: int = 1) -> Recorded:
    waiter = c.join(project_id, delta, Recorded)
    assert waiter is not None
    return waiter


def test_a_lone_caller_leads_at_once_and_the_project_goes_idle() -> None:
    c = Coalescer(depth=1)
    assert c.join(1, 1, Recorded) is None
    assert c.round_done([(1, 1, None)], {1: 41}) == 41
    assert c.join(1, 1, Recorded) is None  # idle again: the next caller leads at once


def test_callers_during_a_round_form_the_next_one_led_by_the_first() -> None:
    c = Coalescer(depth=1)
    assert c.join(1, 1, Recorded) is None
    a = queued(c, delta=2)
    b = queued(c, delta=3)
    assert c.round_done([(1, 1, None)], {1: 1}) == 1
    assert a.round == [(1, 2, a), (1, 3, b)]  # a leads the next round, for both
    assert (a.woken, b.woken) == (1, 0)
    assert c.round_done(a.round, {1: 6}) == 3  # a owns 2..3
    assert (b.woken, b.result()) == (1, 6)  # b owns 4..6


def test_depth_two_lets_a_second_round_start_at_once() -> None:
    c = Coalescer()  # the default depth: 2
    assert c.join(1, 1, Recorded) is None
    assert c.join(1, 1, Recorded) is None  # a second round, in flight beside the first
    third = queued(c)
    c.round_done([(1, 1, None)], {1: 1})
    assert third.round == [(1, 1, third)]  # the finished round's slot passed on
    c.round_done([(1, 1, None)], {1: 2})
    c.round_done(third.round, {1: 3})
    assert c.join(1, 1, Recorded) is None  # idle again


def test_projects_are_separate_lanes_by_default() -> None:
    c = Coalescer(depth=1)
    assert c.join(1, 1, Recorded) is None
    assert c.join(2, 1, Recorded) is None  # another project: not queued behind project 1


def test_one_lane_for_all_projects_batches_them_and_splits_per_project() -> None:
    c = Coalescer(depth=1, per_project=False)
    assert c.join(1, 1, Recorded) is None
    a = queued(c, project_id=7, delta=2)
    b = queued(c, project_id=8, delta=1)
    d = queued(c, project_id=7, delta=3)
    c.round_done([(1, 1, None)], {1: 1})
    assert a.round is not None
    assert deltas_by_project(a.round) == {7: 5, 8: 1}
    # project 7 took 5 numbers ending at 15 (a: 11..12, d: 13..15); project 8 one, 40
    assert c.round_done(a.round, {7: 15, 8: 40}) == 12
    assert (b.result(), d.result()) == (40, 15)


def test_a_failed_round_fails_its_followers_only() -> None:
    c = Coalescer(depth=1)
    c.join(1, 1, Recorded)
    a = queued(c)
    c.round_done([(1, 1, None)], {1: 1})
    assert a.round is not None
    later = queued(c)  # queued while a's round is in flight
    c.round_failed(a.round, RuntimeError("boom"))
    assert later.round == [(1, 1, later)]  # the next round is handed on, not failed
    assert later.error is None


def test_an_interrupted_leader_requeues_its_followers_in_front() -> None:
    c = Coalescer(depth=1)
    c.join(1, 1, Recorded)
    a = queued(c)
    b = queued(c)
    c.round_done([(1, 1, None)], {1: 1})
    assert a.round is not None
    late = queued(c)
    c.round_abandoned(a.round)  # a was cancelled mid-call
    assert b.round == [(1, 1, b), (1, 1, late)]
    assert b.error is None


def test_a_waiter_handed_a_round_then_abandoning_passes_it_on() -> None:
    c = Coalescer(depth=1)
    c.join(1, 1, Recorded)
    a = queued(c)
    b = queued(c)
    c.round_done([(1, 1, None)], {1: 1})
    assert a.round is not None
    c.abandon(1, a)  # cancelled before it could lead
    assert b.round == [(1, 1, b)]  # b leads what is left, without a's delta


def test_an_abandoned_waiter_is_left_out_of_the_next_round() -> None:
    c = Coalescer(depth=1)
    c.join(1, 1, Recorded)
    a = queued(c)
    b = queued(c)
    c.abandon(1, a)
    c.round_done([(1, 1, None)], {1: 1})
    assert a.round is None
    assert b.round == [(1, 1, b)]


def test_everyone_abandoning_leaves_the_project_idle() -> None:
    c = Coalescer(depth=1)
    c.join(1, 1, Recorded)
    a = queued(c)
    c.abandon(1, a)
    c.round_done([(1, 1, None)], {1: 1})
    assert c.join(1, 1, Recorded) is None


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        Coalescer(depth=0)
