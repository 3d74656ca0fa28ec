"""What a failed attempt means, whether and when to try again, and what gets reported.

Sans-I/O on purpose: a client asks `Attempts` for the next attempt's timeouts, reports how it
ended, and does only the I/O and the sleeping itself. Every client shares these rules, their
metrics and their logs. Hand-written rather than stamina/tenacity: the decision is per
attempt from the SQLSTATE *and* the attempt's own timing and mode, the random source must be
injectable for deterministic tests, the metrics carry pgcounter's historical names, and the
success path must allocate next to nothing.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from dataclasses import dataclass

import psycopg
import psycopg.errors
import psycopg_pool

from pgcounter.errors import CounterNotInstalledError, CounterTimeoutError
from pgcounter.metrics import (
    DURATION,
    RETRY,
    STATEMENT_TIMEOUT_EXHAUSTED,
    STATEMENT_TIMEOUT_RETRY,
    Metrics,
)

logger = logging.getLogger("pgcounter")


def _positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pgcounter: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"pgcounter: {name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per attempt. The lock timeout is below the statement timeout so that a wait for the
    row lock ends as 55P03 (a lock timeout) while the statement timeout still guards
    everything else."""

    statement_timeout_ms: int = 3000
    lock_timeout_ms: int = 2500

    def __post_init__(self) -> None:
        _positive_int("statement_timeout_ms", self.statement_timeout_ms, 1)
        _positive_int("lock_timeout_ms", self.lock_timeout_ms, 1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry, how long to back off, and the budget of the whole call.

    Retry n (1-based) sleeps a uniform random time in [0, min(max, base * 2**(n-1))] ms
    ("full jitter"), so workers that failed together do not come back together. With the
    defaults the sleeps of three retries add at most 350 ms. No attempt starts after
    `deadline_ms` from the call's start, and each attempt's timeouts are cut to what is left
    of it, so a call ends within about `deadline_ms`.
    """

    max_retries: int = 3
    backoff_base_ms: float = 50.0
    backoff_max_ms: float = 1000.0
    deadline_ms: float = 10_000.0

    def __post_init__(self) -> None:
        _positive_int("max_retries", self.max_retries, 0)
        if not self.backoff_base_ms > 0:
            raise ValueError(f"pgcounter: backoff_base_ms must be > 0, got {self.backoff_base_ms}")
        if not self.backoff_max_ms >= self.backoff_base_ms:
            raise ValueError("pgcounter: backoff_max_ms must be >= backoff_base_ms")
        if not self.deadline_ms > 0:
            raise ValueError(f"pgcounter: deadline_ms must be > 0, got {self.deadline_ms}")

    def backoff_ms(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.backoff_max_ms, self.backoff_base_ms * 2.0 ** (retry - 1))
        return rng.uniform(0.0, ceiling)


class Failure(enum.Enum):
    """Why an attempt failed, as far as retrying is concerned."""

    STATEMENT_TIMEOUT = "statement_timeout"  # 57014, after the attempt's statement timeout
    LOCK_TIMEOUT = "lock_timeout"  # 55P03
    DEADLOCK = "deadlock"  # 40P01
    SERIALIZATION = "serialization"  # 40001
    CONNECTION = "connection"  # the connection died mid-call: 57P01-57P03, class 08, none
    FATAL = "fatal"  # anything else: never retried

    @property
    def is_timeout(self) -> bool:
        return self in (Failure.STATEMENT_TIMEOUT, Failure.LOCK_TIMEOUT)


_BY_SQLSTATE = {
    "55P03": Failure.LOCK_TIMEOUT,
    "40P01": Failure.DEADLOCK,
    "40001": Failure.SERIALIZATION,
    "57P01": Failure.CONNECTION,  # admin_shutdown: pg_terminate_backend, fast shutdown
    "57P02": Failure.CONNECTION,  # crash_shutdown
    "57P03": Failure.CONNECTION,  # cannot_connect_now: the server is starting or stopping
    "57P05": Failure.CONNECTION,  # idle_session_timeout closed the connection
}

# The pool's own errors are OperationalErrors without a SQLSTATE, like a lost socket, but
# say nothing about the database: never retried as a lost connection.
_POOL_ERRORS = (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, psycopg_pool.TooManyRequests)


def classify(exc: psycopg.Error, elapsed_ms: float, statement_timeout_ms: int) -> Failure:
    """By SQLSTATE, never by message text.

    57014 is both a statement timeout and a cancel (pg_cancel_backend, or the client's own
    cancel on KeyboardInterrupt). The server starts the statement's timer only after the
    client sent it, so an attempt that failed with 57014 before its statement timeout could
    have fired was cancelled, not timed out.
    """
    if isinstance(exc, _POOL_ERRORS):
        return Failure.FATAL
    sqlstate = exc.sqlstate
    if sqlstate == "57014":
        timed_out = elapsed_ms >= statement_timeout_ms - 1.0  # 1 ms: clock granularity
        return Failure.STATEMENT_TIMEOUT if timed_out else Failure.FATAL
    if sqlstate is None:
        # psycopg raises these without a SQLSTATE when the socket is gone.
        return Failure.CONNECTION if isinstance(exc, psycopg.OperationalError) else Failure.FATAL
    found = _BY_SQLSTATE.get(sqlstate)
    if found is not None:
        return found
    return Failure.CONNECTION if sqlstate.startswith("08") else Failure.FATAL


def raise_if_not_installed(exc: psycopg.Error) -> None:
    """Turn 'function or schema does not exist' into a precise pgcounter error."""
    if isinstance(exc, psycopg.errors.UndefinedFunction | psycopg.errors.InvalidSchemaName):
        raise CounterNotInstalledError(
            "pgcounter: the database has no pgcounter functions; run `pgcounter migrate` on it"
        ) from exc


class Attempts:
    """The attempts of one call: the budget, the decisions, the reports.

    A client calls `start()` right before sending an attempt, then `succeeded()` or
    `failed(exc)`; the latter returns the seconds to sleep before the next attempt, None
    when `exc` is not to be retried (re-raise it), or raises CounterTimeoutError when the
    retries or the deadline ran out on timeouts.
    """

    __slots__ = (
        "_autonomous",
        "_call_started",
        "_deadline",
        "_ended",
        "_metrics",
        "_policy",
        "_rng",
        "_sent",
        "_statement_timeout_ms",
        "_timeouts",
        "last_failure",
        "number",
        "project_id",
        "project_ids",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        timeouts: Timeouts,
        project_ids: tuple[int, ...],
        metrics: Metrics | None,
        rng: random.Random,
        *,
        autonomous: bool,
        started: float | None = None,
    ) -> None:
        self._policy = policy
        self._timeouts = timeouts
        self._metrics = metrics
        self._rng = rng
        self._autonomous = autonomous
        self.project_ids = project_ids
        self.project_id = project_ids[0]
        self.number = 0
        self.last_failure: Failure | None = None
        # A coalesced caller's budget started when it queued, not when it came to lead.
        self._call_started = started if started is not None else time.monotonic()
        self._deadline = self._call_started + policy.deadline_ms / 1000.0
        self._sent = self._ended = self._call_started
        self._statement_timeout_ms = timeouts.statement_timeout_ms

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def start(self) -> tuple[str, str]:
        """Begin the next attempt; its statement and lock timeouts, in ms, as set_config wants.

        Both are cut to what is left of the deadline.
        """
        self.number += 1
        self._sent = time.monotonic()
        left_ms = max(1, int((self._deadline - self._sent) * 1000.0))
        statement = min(self._timeouts.statement_timeout_ms, left_ms)
        lock = min(self._timeouts.lock_timeout_ms, statement)
        self._statement_timeout_ms = statement
        return str(statement), str(lock)

    def succeeded(self) -> None:
        if self._metrics is not None:
            self._timing("ok")

    def ended(self) -> None:
        """The attempt's error arrived: call before any cleanup round trip, so that the
        timeout-or-cancel decision sees the attempt's own duration."""
        self._ended = time.monotonic()

    def failed(self, exc: psycopg.Error) -> float | None:
        now = time.monotonic()
        ended = self._ended if self._ended >= self._sent else now
        kind = classify(exc, (ended - self._sent) * 1000.0, self._statement_timeout_ms)
        self.last_failure = kind
        if not self._retryable(kind):
            self._timing("error")
            raise_if_not_installed(exc)
            return None
        sleep_ms = self._policy.backoff_ms(self.number, self._rng)
        out_of_retries = self.number > self._policy.max_retries
        # No new attempt may start past the deadline, nor one with almost nothing left of it.
        out_of_time = now + (sleep_ms + 1.0) / 1000.0 >= self._deadline
        if out_of_retries or out_of_time:
            self._give_up(exc, kind, "retries" if out_of_retries else "deadline")
            return None  # not reached for timeouts: _give_up raised
        self._report_retry(exc, kind, sleep_ms)
        return sleep_ms / 1000.0

    def pool_timed_out(self, exc: psycopg_pool.PoolTimeout) -> None:
        """No connection came free before the deadline: the call ran out of time."""
        self.out_of_time("pool", "got no pooled connection", exc)

    def out_of_time(self, reason: str, what: str, exc: BaseException | None = None) -> None:
        """The deadline passed while waiting (for a connection, for a coalesced round)."""
        self.number = max(self.number, 1)
        self.last_failure = Failure.FATAL
        self._incr(STATEMENT_TIMEOUT_EXHAUSTED, None)
        self._timing("timeout_exhausted")
        logger.error(
            "pgcounter: increment of %s %s before its deadline; giving up",
            self._what(),
            what,
            extra=self._fields(None, reason),
        )
        raise CounterTimeoutError(self.project_id, self.number, self.project_ids) from exc

    def _retryable(self, kind: Failure) -> bool:
        if kind is Failure.FATAL:
            return False
        if self._autonomous:
            return True
        # Inside the caller's transaction a lost connection took the transaction with it; a
        # serialization failure (REPEATABLE READ or SERIALIZABLE) recurs on every retry in
        # the same snapshot; and a deadlock's cycle runs through locks the caller still
        # holds after the savepoint is undone. The caller has to retry its transaction.
        return kind.is_timeout

    def _give_up(self, exc: psycopg.Error, kind: Failure, why: str) -> None:
        attempts = self.number
        fields = self._fields(exc, kind.value)
        if kind.is_timeout:
            self._incr(STATEMENT_TIMEOUT_EXHAUSTED, None)
            self._timing("timeout_exhausted")
        else:
            self._timing("error")
        logger.error(
            "pgcounter: increment of %s failed on all %d attempts (%s, %s used up); giving up",
            self._what(),
            attempts,
            kind.value,
            why,
            extra=fields,
        )
        if kind.is_timeout:
            raise CounterTimeoutError(self.project_id, attempts, self.project_ids) from exc

    def _report_retry(self, exc: psycopg.Error, kind: Failure, sleep_ms: float) -> None:
        attempt = str(self.number)
        self._incr(RETRY, {"attempt": attempt, "reason": kind.value})
        if kind.is_timeout:
            self._incr(STATEMENT_TIMEOUT_RETRY, {"attempt": attempt, "reason": kind.value})
        fields = self._fields(exc, kind.value)
        fields["sleep_ms"] = sleep_ms
        logger.warning(
            "pgcounter: increment of %s failed on attempt %d (%s, SQLSTATE %s); "
            "retrying in %.0f ms",
            self._what(),
            self.number,
            kind.value,
            exc.sqlstate or "none",
            sleep_ms,
            extra=fields,
        )

    def _what(self) -> str:
        if len(self.project_ids) == 1:
            return f"project {self.project_id}"
        shown = ", ".join(map(str, self.project_ids[:10]))
        more = ", …" if len(self.project_ids) > 10 else ""
        return f"{len(self.project_ids)} projects ({shown}{more})"

    def _fields(self, exc: psycopg.Error | None, reason: str) -> dict[str, object]:
        fields: dict[str, object] = {
            "project_id": self.project_id,
            "attempt": self.number,
            "sqlstate": exc.sqlstate if exc is not None else None,
            "reason": reason,
        }
        if len(self.project_ids) > 1:
            fields["project_ids"] = self.project_ids
        return fields

    def _timing(self, outcome: str) -> None:
        if self._metrics is None:
            return
        elapsed_ms = (time.monotonic() - self._call_started) * 1000.0
        tags = {"outcome": outcome, "attempts": str(self.number)}
        try:
            self._metrics.timing(DURATION, elapsed_ms, tags)
        except Exception:
            logger.exception("pgcounter: the metrics backend failed on %s", DURATION)

    def _incr(self, key: str, tags: dict[str, str] | None) -> None:
        if self._metrics is None:
            return
        # A broken metrics backend must not turn a counter call into a failure.
        try:
            self._metrics.incr(key, 1, tags)
        except Exception:
            logger.exception("pgcounter: the metrics backend failed on %s", key)
