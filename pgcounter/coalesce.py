"""Coalescing: concurrent increments of one project served by one database call.

While a call for a project is in flight, later increments of that project queue for the
next round. When the call returns, its caller (the round's leader) hands the queued round to
the first caller in it, who sends one `increment_project_counter(project_id, n)` for all of
them and splits the returned range: each caller gets numbers of its own, exactly as if it
had called alone. A lone caller leads a round of one at once: no added wait.

Sans-I/O: this holds the state and the arithmetic; the sync client drives it under a lock
with threads, the async one on its event loop with futures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

W = TypeVar("W")

Round = list[tuple[int, W]]
"""The (delta, waiter) of each caller in a round, in arrival order; the first one leads."""


class Coalescer(Generic[W]):
    """Per-project rounds. Not thread-safe: the driver serialises the calls."""

    __slots__ = ("_queued",)

    def __init__(self) -> None:
        # project in flight -> the next round's callers so far
        self._queued: dict[int, Round[W]] = {}

    def in_flight(self, project_id: int) -> bool:
        return project_id in self._queued

    def lead_now(self, project_id: int) -> None:
        """The caller found nothing in flight and leads a round of one."""
        self._queued[project_id] = []

    def queue(self, project_id: int, delta: int, waiter: W) -> None:
        """The caller waits for the next round (the project is in flight)."""
        self._queued[project_id].append((delta, waiter))

    def next_round(self, project_id: int) -> Round[W] | None:
        """A round of the project ended: the callers of the next one, or None (idle now)."""
        queued = self._queued[project_id]
        if not queued:
            del self._queued[project_id]
            return None
        self._queued[project_id] = []
        return queued


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
