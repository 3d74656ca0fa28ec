"""Coalescing: concurrent increments served by one database call.

Callers are grouped in lanes: one lane per project (the default), or one lane for all
projects (`batch_projects=True`). Up to `depth` calls (rounds) of a lane may be in flight at
once; later callers in that lane queue for the next round. When a call returns, its caller
(the round's leader) hands the queued round to the first caller in it, who sends one call
for all of them — `increment_project_counter(project_id, n)` for a round of one project,
`increment_project_counters(...)` for several — and splits the returned ranges: each caller
gets numbers of its own, exactly as if it had called alone. A lone caller leads a round of
one at once: no added wait.

Why a depth of 2 by default: the row lock serialises a project's calls anyway, and with two
in flight one is already waiting on the lock while the other commits, so the database never
idles during a hand-over. With a depth of 1, two workers take turns and each waits for the
other's whole round trip: slower than not coalescing at all (docs/benchmarks.md).

Sans-I/O: this holds the state, the arithmetic and the hand-overs; the sync client drives it
under a lock with threads, the async one on its event loop with futures. Neither has a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar


class Waiter:
    """A caller queued for a round; woken with its value, its error, or a round to lead."""

    __slots__ = ("abandoned", "error", "round", "value")

    def __init__(self) -> None:
        self.value = 0
        self.error: BaseException | None = None
        self.round: Round | None = None
        self.abandoned = False

    def wake(self) -> None:
        raise NotImplementedError

    def result(self) -> int:
        if self.error is not None:
            raise self.error
        return self.value


Entry = tuple[int, int, Waiter | None]
"""(project_id, delta, waiter) of a caller. The waiter is None for a caller that found a
free slot and leads at once."""
Round = list[Entry]
"""The callers of one round, in arrival order; the first one leads."""

W = TypeVar("W", bound=Waiter)


class Coalescer:
    """Rounds per lane. Not thread-safe: the driver serialises the calls."""

    __slots__ = ("_depth", "_in_flight", "_per_project", "_queued")

    def __init__(self, depth: int = 2, *, per_project: bool = True) -> None:
        if depth < 1:
            raise ValueError("pgcounter: the coalescing depth must be at least 1")
        self._depth = depth
        self._per_project = per_project
        self._in_flight: dict[int, int] = {}  # lane -> rounds in flight
        self._queued: dict[int, Round] = {}  # lane -> callers queued for its next round

    def _lane(self, project_id: int) -> int:
        return project_id if self._per_project else 0

    def join(self, project_id: int, delta: int, make_waiter: Callable[[], W]) -> W | None:
        """None: lead a round of one now. Else wait on the waiter, then `result()` it, or
        lead its `round` if it got one."""
        lane = self._lane(project_id)
        in_flight = self._in_flight.get(lane, 0)
        if in_flight < self._depth:
            self._in_flight[lane] = in_flight + 1
            return None
        waiter = make_waiter()
        self._queued.setdefault(lane, []).append((project_id, delta, waiter))
        return waiter

    def round_done(self, round_: Round, values: Mapping[int, int]) -> int:
        """The round's call returned each project's new value: wake each follower with its
        own number and return the leader's."""
        self._hand_on(self._lane(round_[0][0]))
        totals = deltas_by_project(round_)
        # Each project's range ended at its value; hand it out in arrival order.
        end = {project: values[project] - total for project, total in totals.items()}
        leader_value = 0
        for index, (project, delta, waiter) in enumerate(round_):
            end[project] += delta
            if index == 0:
                leader_value = end[project]
            else:
                assert waiter is not None
                waiter.value = end[project]
                waiter.wake()
        return leader_value

    def round_failed(self, round_: Round, error: Exception) -> None:
        """The round's call failed: every caller in it gets the error; nothing was taken."""
        self._hand_on(self._lane(round_[0][0]))
        for _, _, waiter in round_[1:]:
            assert waiter is not None
            waiter.error = error
            waiter.wake()

    def round_abandoned(self, round_: Round) -> None:
        """The leader was interrupted (KeyboardInterrupt, task cancelled): that is its own
        business, so its followers go back to the front of the queue instead of failing."""
        lane = self._lane(round_[0][0])
        self._requeue(lane, round_[1:])
        self._hand_on(lane)

    def settle(self, round_: Round, error: BaseException) -> None:
        """The round's leader raised: an error fails the round; an interrupt
        (KeyboardInterrupt, a cancelled task) is the leader's own business."""
        if isinstance(error, Exception):
            self.round_failed(round_, error)
        else:
            self.round_abandoned(round_)

    def abandon(self, project_id: int, waiter: Waiter) -> None:
        """A queued caller gave up waiting; if it had been handed a round to lead, the rest
        of that round goes back to the front of the queue."""
        waiter.abandoned = True
        if waiter.round is not None:
            lane = self._lane(project_id)
            self._requeue(lane, waiter.round[1:])
            waiter.round = None
            self._hand_on(lane)

    def _requeue(self, lane: int, entries: Round) -> None:
        if entries:
            self._queued.setdefault(lane, [])[:0] = entries

    def _hand_on(self, lane: int) -> None:
        """A round's slot is free: pass it to the queued callers, or give it back."""
        queued = [e for e in self._queued.pop(lane, []) if not _abandoned(e)]
        if not queued:
            in_flight = self._in_flight[lane] - 1
            if in_flight:
                self._in_flight[lane] = in_flight
            else:
                del self._in_flight[lane]
            return
        leader = queued[0][2]
        assert leader is not None
        leader.round = queued
        leader.wake()


def _abandoned(entry: Entry) -> bool:
    return entry[2] is not None and entry[2].abandoned


def deltas_by_project(round_: Round) -> dict[int, int]:
    """What the round's call must take, per project."""
    totals: dict[int, int] = {}
    for project, delta, _ in round_:
        totals[project] = totals.get(project, 0) + delta
    return totals
