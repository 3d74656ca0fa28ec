"""The clients' control flow, written once, as generators.

A flow yields what it needs done — send an attempt, sleep, check the pool, wait for a
coalesced round, take numbers — and gets the outcome back (a value, or the exception thrown
into it). `ProjectCounter` drives the flows with threads, `AsyncProjectCounter` with asyncio:
their drivers only do the yielded operations, so the retry loop and the coalescing protocol
cannot drift apart between them. (psycopg itself is layered the same way.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from pgcounter.coalesce import Coalescer, Round, Waiter, deltas_by_project
from pgcounter.options import Settings
from pgcounter.retry import Attempts, Failure

Rows = list[tuple[Any, ...]]
W = TypeVar("W", bound=Waiter)


class Op:
    """Something a flow needs its driver to do."""


class _Attempt(Op):
    pass


class _CheckPool(Op):
    pass


ATTEMPT = _Attempt()
"""Send one attempt (the driver knows which call); its rows come back."""
CHECK_POOL = _CheckPool()
"""Drop the pool's dead idle connections: after a server restart they are all dead."""


@dataclass(frozen=True, slots=True)
class Sleep(Op):
    seconds: float


@dataclass(frozen=True, slots=True)
class WaitFor(Op):
    """Wait until `waiter` is woken or `timeout_s` passes; True if it was woken."""

    waiter: Waiter
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Take(Op):
    """Take these numbers per project, in one call, within the deadline from `started`."""

    totals: dict[int, int]
    started: float


def retried(attempts: Attempts) -> Generator[Op, Any, Rows]:
    """Attempts of one call until it succeeds or `Attempts` gives up."""
    while True:
        try:
            rows = yield ATTEMPT
        except PoolTimeout as exc:
            attempts.pool_timed_out(exc)
            raise  # not reached: pool_timed_out raised
        except psycopg.Error as exc:
            delay = attempts.failed(exc)
            if delay is None:
                raise
            if attempts.last_failure is Failure.CONNECTION:
                yield CHECK_POOL
            yield Sleep(delay)
            continue
        attempts.succeeded()
        return rows  # type: ignore[no-any-return]


def coalesced(
    coalescer: Coalescer,
    lock: threading.Lock,
    settings: Settings,
    project_id: int,
    delta: int,
    make_waiter: Callable[[], W],
) -> Generator[Op, Any, int]:
    """Join the project's round (see pgcounter.coalesce): lead one, or wait for one.

    The lock guards the coalescer between threads; under asyncio it is never contended and
    never held across a yield.
    """
    started = time.monotonic()
    round_: Round | None = None
    waiter: W | None = None
    try:
        with lock:
            waiter = coalescer.join(project_id, delta, make_waiter)
            if waiter is None:
                round_ = [(project_id, delta, None)]
        if waiter is not None:
            # A queued caller keeps its own deadline, and leads with what is left of it.
            left_s = max(0.0, started + settings.policy.deadline_ms / 1000.0 - time.monotonic())
            if not (yield WaitFor(waiter, left_s)):
                settings.attempts((project_id,), autonomous=True, started=started).out_of_time(
                    "queued", "waited for a coalesced round"
                )
            if waiter.round is None:
                return waiter.result()
            round_ = waiter.round
        assert round_ is not None
        values = yield Take(deltas_by_project(round_), started)
    except BaseException as exc:
        with lock:
            if round_ is not None:
                coalescer.settle(round_, exc)
            elif waiter is not None:
                coalescer.abandon(project_id, waiter)
        raise
    with lock:
        return coalescer.round_done(round_, values)
