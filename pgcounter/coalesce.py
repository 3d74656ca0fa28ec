"""Coalescing: concurrent increments of one project served by one database call.

While a call for a project is in flight, later increments of that project queue for the
next round. When the call returns, its caller (the round's leader) hands the queued round to
the first caller in it, who sends one `increment_project_counter(project_id, n)` for all of
them and splits the returned range: each caller gets numbers of its own, exactly as if it
had called alone. A lone caller leads a round of one at once: no added wait.

Sans-I/O: this holds the state, the arithmetic and the hand-overs; the sync client drives it
under a lock with threads, the async one on its event loop with futures. Neither has a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


Round = list[tuple[int, Waiter | None]]
"""(delta, waiter) of each caller in a round, in arrival order. The first one leads; it is
None for a caller that found nothing in flight and leads at once."""

W = TypeVar("W", bound=Waiter)


class Coalescer:
    """Per-project rounds. Not thread-safe: the driver serialises the calls."""

    __slots__ = ("_queued",)

    def __init__(self) -> None:
        # project in flight -> the callers queued for its next round
        self._queued: dict[int, Round] = {}

    def join(self, project_id: int, delta: int, make_waiter: Callable[[], W]) -> W | None:
        """None: lead a round of one now. Else wait on the waiter, then `result()` it, or
        lead its `round` if it got one."""
        queued = self._queued.get(project_id)
        if queued is None:
            self._queued[project_id] = []
            return None
        waiter = make_waiter()
        queued.append((delta, waiter))
        return waiter

    def round_done(self, project_id: int, round_: Round, value: int) -> int:
        """The round's call returned `value`: wake each follower with its own number and
        return the leader's."""
        self._hand_on(project_id)
        ends = split(value, [delta for delta, _ in round_])
        for (_, waiter), end in zip(round_[1:], ends[1:], strict=True):
            assert waiter is not None
            waiter.value = end
            waiter.wake()
        return ends[0]

    def round_failed(self, project_id: int, round_: Round, error: Exception) -> None:
        """The round's call failed: every caller in it gets the error; nothing was taken."""
        self._hand_on(project_id)
        for _, waiter in round_[1:]:
            assert waiter is not None
            waiter.error = error
            waiter.wake()

    def round_abandoned(self, project_id: int, round_: Round) -> None:
        """The leader was interrupted (KeyboardInterrupt, task cancelled): that is its own
        business, so its followers go back to the front of the queue instead of failing."""
        self._queued[project_id][:0] = round_[1:]
        self._hand_on(project_id)

    def abandon(self, project_id: int, waiter: Waiter) -> None:
        """A queued caller gave up waiting; if it had been handed a round to lead, the rest
        of that round goes back to the front of the queue."""
        waiter.abandoned = True
        if waiter.round is not None:
            self._queued[project_id][:0] = waiter.round[1:]
            waiter.round = None
            self._hand_on(project_id)

    def _hand_on(self, project_id: int) -> None:
        queued = [entry for entry in self._queued[project_id] if not _abandoned(entry)]
        if not queued:
            del self._queued[project_id]
            return
        self._queued[project_id] = []
        leader = queued[0][1]
        assert leader is not None
        leader.round = queued
        leader.wake()


def _abandoned(entry: tuple[int, Waiter | None]) -> bool:
    return entry[1] is not None and entry[1].abandoned


def split(value: int, deltas: Sequence[int]) -> list[int]:
    """Each caller's own return value, from the value returned for the round's total.

    The round took `sum(deltas)` numbers ending at `value`; caller i owns the next `deltas[i]`
    of them in order and, like a lone call, gets the last number of its range.
    """
    end = value - sum(deltas)
    ends = []
    for delta in deltas:
        end += delta
        ends.append(end)
    return ends
