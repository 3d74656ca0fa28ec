"""Pre-allocated blocks: the fastest mode, opt-in.

A `BlockCounter` reserves a block of numbers per project with one `increment(project_id, n)`
and hands them out from memory. Numbers stay unique across every process and thread (each
block is a range no one else was given); the price is gaps (a block's unused numbers when
the process exits) and no order across processes (process A may hand out 150 after process
B handed out 201).

Blocks start at `initial_block` and double, up to `max_block`, while a project uses a block
up in less than `grow_within_s`. When a block runs low (`low_water`, a fraction of it), the
caller that notices fetches the next one, so the others rarely wait for the database.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref

from pgcounter.client import ProjectCounter
from pgcounter.validation import check_project_id

logger = logging.getLogger("pgcounter")


class _Project:
    __slots__ = ("end", "fetched_at", "lock", "next", "prefetching", "refill", "size", "spare")

    def __init__(self, size: int) -> None:
        self.lock = threading.Lock()  # guards the numbers
        self.refill = threading.Lock()  # one database fetch at a time
        self.next = 1
        self.end = 0  # empty: next > end
        self.spare: tuple[int, int] | None = None
        self.prefetching = False
        self.size = size
        self.fetched_at = 0.0


_instances: weakref.WeakSet[BlockCounter] = weakref.WeakSet()


def _forget_blocks_after_fork() -> None:
    # A forked child (gunicorn --preload, multiprocessing) inherits the parent's blocks:
    # handing them out again would duplicate numbers. The child starts with none.
    for instance in list(_instances):
        instance._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_blocks_after_fork)


class BlockCounter:
    """Thread-safe; `next(project_id)` is the hot path (a lock and two integer operations).

    Fork-safe: a child process forgets the blocks it inherited and reserves its own.
    """

    def __init__(
        self,
        counter: ProjectCounter,
        *,
        initial_block: int = 100,
        max_block: int = 1000,
        low_water: float = 0.2,
        grow_within_s: float = 1.0,
    ) -> None:
        if not 1 <= initial_block <= max_block:
            raise ValueError("pgcounter: need 1 <= initial_block <= max_block")
        if not 0.0 <= low_water < 1.0:
            raise ValueError("pgcounter: low_water is a fraction of a block, in [0, 1)")
        self._counter = counter
        self._initial = initial_block
        self._max = max_block
        self._low_water = low_water
        self._grow_within_s = grow_within_s
        self._projects: dict[int, _Project] = {}
        self._projects_lock = threading.Lock()
        _instances.add(self)

    def _forget(self) -> None:
        self._projects = {}
        self._projects_lock = threading.Lock()

    def next(self, project_id: int) -> int:
        """A number of the project's that no one else was or will be given."""
        project = self._projects.get(project_id)
        if project is None:
            project = self._project(project_id)
        with project.lock:
            number = project.next
            if number <= project.end:
                project.next = number + 1
                if (
                    project.spare is not None
                    or project.prefetching
                    or project.end - number > project.size * self._low_water
                ):
                    return number
                project.prefetching = True
            else:
                number = 0
        if number:
            self._prefetch(project_id, project)  # low water: fetch the next block now
            return number
        return self._next_after_refill(project_id, project)

    def _project(self, project_id: int) -> _Project:
        check_project_id(project_id)
        with self._projects_lock:
            return self._projects.setdefault(project_id, _Project(self._initial))

    def _prefetch(self, project_id: int, project: _Project) -> None:
        try:
            with project.refill:
                with project.lock:
                    if project.spare is not None:
                        return
                block = self._fetch(project_id, project)
                with project.lock:
                    project.spare = block
        except Exception:
            # The caller already has its number; the next one to run dry fetches again and
            # gets the error itself.
            logger.warning(
                "pgcounter: prefetching a block for project %d failed", project_id, exc_info=True
            )
        finally:
            with project.lock:
                project.prefetching = False

    def _next_after_refill(self, project_id: int, project: _Project) -> int:
        with project.refill:
            with project.lock:
                if project.next > project.end and project.spare is not None:
                    project.next, project.end = project.spare
                    project.spare = None
                if project.next <= project.end:
                    number = project.next
                    project.next = number + 1
                    return number
            block = self._fetch(project_id, project)
            with project.lock:
                project.next, project.end = block
                number = project.next
                project.next = number + 1
                return number

    def _fetch(self, project_id: int, project: _Project) -> tuple[int, int]:
        """Reserve the next block (called with `project.refill` held)."""
        now = time.monotonic()
        if project.fetched_at and now - project.fetched_at < self._grow_within_s:
            project.size = min(self._max, project.size * 2)
        project.fetched_at = now
        size = project.size
        end = self._counter.increment(project_id, size)
        return end - size + 1, end
