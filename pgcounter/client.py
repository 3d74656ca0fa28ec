"""The synchronous client: `ProjectCounter` over a psycopg connection pool."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from pgcounter import calls
from pgcounter.metrics import Metrics, NoMetrics
from pgcounter.retry import Attempts, RetryPolicy, raise_if_not_installed
from pgcounter.validation import check_delta, check_project_id

Connection = psycopg.Connection[Any]


class ProjectCounter:
    """Hands out per-project numbers; thread-safe, one pool shared by all threads.

    Each increment is its own short transaction (autonomous: a number taken and then not
    used by the caller is a gap, never handed out again), sent in one round trip.
    """

    def __init__(
        self,
        dsn: str,
        *,
        statement_timeout_ms: int = 3000,
        max_retries: int = 3,
        backoff_base_ms: float = 50.0,
        backoff_max_ms: float = 2000.0,
        metrics: Metrics | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._configure(
            statement_timeout_ms,
            RetryPolicy(max_retries, backoff_base_ms, backoff_max_ms),
            metrics,
            rng,
        )
        pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            name="pgcounter",
        )
        try:
            pool.open(wait=True, timeout=connect_timeout_s)
        except BaseException:
            pool.close()
            raise
        self._pool = pool
        self._owns_pool = True

    @classmethod
    def from_pool(
        cls,
        pool: ConnectionPool[Any],
        *,
        statement_timeout_ms: int = 3000,
        max_retries: int = 3,
        backoff_base_ms: float = 50.0,
        backoff_max_ms: float = 2000.0,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> Self:
        """A counter on a pool the caller already has; closing the counter leaves it open."""
        self = cls.__new__(cls)
        self._configure(
            statement_timeout_ms,
            RetryPolicy(max_retries, backoff_base_ms, backoff_max_ms),
            metrics,
            rng,
        )
        self._pool = pool
        self._owns_pool = False
        return self

    def _configure(
        self,
        statement_timeout_ms: int,
        policy: RetryPolicy,
        metrics: Metrics | None,
        rng: random.Random | None,
    ) -> None:
        if isinstance(statement_timeout_ms, bool) or not isinstance(statement_timeout_ms, int):
            raise TypeError("pgcounter: statement_timeout_ms must be an int")
        if statement_timeout_ms < 1:
            raise ValueError(
                f"pgcounter: statement_timeout_ms must be >= 1, got {statement_timeout_ms}"
            )
        self._statement_timeout = str(statement_timeout_ms)
        self._policy = policy
        self._metrics: Metrics = metrics if metrics is not None else NoMetrics()
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not crypto)

    @property
    def pool(self) -> ConnectionPool[Any]:
        return self._pool

    def increment(self, project_id: int, delta: int = 1) -> int:
        """Add `delta` to the project's counter and return the new value.

        The caller owns the numbers `value - delta + 1 … value`. Statement timeouts are
        retried with backoff; when they run out, CounterTimeoutError.
        """
        project_id = check_project_id(project_id)
        delta = check_delta(delta)
        attempts = Attempts(self._policy, project_id, self._metrics, self._rng)
        while True:
            try:
                return self._increment_once(project_id, delta)
            except psycopg.Error as exc:
                delay = attempts.after_failure(exc)
                if delay is None:
                    raise
            time.sleep(delay)

    def current(self, project_id: int) -> int:
        """The last number handed out for the project; 0 if it never was incremented."""
        project_id = check_project_id(project_id)
        with self._pool.connection() as conn:
            try:
                row = conn.execute(calls.CURRENT, (project_id,)).fetchone()
            except psycopg.Error as exc:
                raise_if_not_installed(exc)
                raise
        assert row is not None
        return int(row[0])

    def _increment_once(self, project_id: int, delta: int) -> int:
        with self._pool.connection() as conn, _own_transaction(conn):
            # BEGIN … COMMIT sent together: one round trip, and the statement timeout set
            # here ends with this transaction. Only the increment is a prepared statement:
            # psycopg would count a statement that the server skipped after an error in the
            # same pipeline as prepared, and every later use of it would fail.
            with _pipeline(conn):
                conn.execute(calls.BEGIN, prepare=False)
                conn.execute(
                    calls.SET_LOCAL_STATEMENT_TIMEOUT, (self._statement_timeout,), prepare=False
                )
                cur = conn.execute(calls.INCREMENT, (project_id, delta))
                conn.execute(calls.COMMIT, prepare=False)
            row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def _own_transaction(conn: Connection) -> Iterator[None]:
    """Run our own BEGIN … COMMIT on a pooled connection and hand it back as it was found.

    Whatever interrupts the attempt (a database error, KeyboardInterrupt), the connection
    goes back idle, or closed so that the pool replaces it; and a caller's pool of
    non-autocommit connections gets them back non-autocommit.
    """
    was_autocommit = conn.autocommit
    if not was_autocommit:
        conn.autocommit = True
    try:
        yield
    finally:
        _back_to_idle(conn)
        if not was_autocommit and not conn.closed:
            conn.autocommit = False


def _pipeline(conn: Connection) -> contextlib.AbstractContextManager[Any]:
    # libpq < 14 has no pipeline mode: the same statements then take four round trips.
    return conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()


def _idle(conn: Connection) -> bool:
    return conn.info.transaction_status == pq.TransactionStatus.IDLE


def _back_to_idle(conn: Connection) -> None:
    if conn.closed or _idle(conn):
        return
    try:
        conn.execute(calls.ROLLBACK, prepare=False)
    except psycopg.Error:
        conn.close()  # the pool discards closed connections; the original error goes on
        return
    except BaseException:
        conn.close()
        raise
    if not _idle(conn):
        conn.close()
