"""The synchronous client: `ProjectCounter` over a psycopg connection pool."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from pgcounter import calls, flows
from pgcounter.coalesce import Coalescer, Waiter
from pgcounter.options import (
    PREPARE_THRESHOLD,
    CounterOptions,
    Settings,
    check_caller_connection,
    pool_kwargs,
)
from pgcounter.retry import Attempts, raise_if_not_installed
from pgcounter.validation import (
    check_batch,
    check_delta,
    check_project_id,
    check_value,
    check_values,
)

Connection = psycopg.Connection[Any]
Rows = list[tuple[Any, ...]]
T = TypeVar("T")


class _ThreadWaiter(Waiter):
    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class ProjectCounter:
    """Hands out per-project numbers; thread-safe, one pool shared by all threads.

    By default each increment is its own short transaction (autonomous: a number taken and
    then not used by the caller is a gap, never handed out again), sent in one round trip.
    With `conn=` it runs inside the caller's transaction instead (gapless, but the row lock
    is held until the caller commits).
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 30.0,
        prepare_threshold: int | None = PREPARE_THRESHOLD,
        **options: Unpack[CounterOptions],
    ) -> None:
        """A counter with a pool of its own: `min_size`…`max_size` connections to `dsn`.

        `prepare_threshold` is psycopg's, for the pool's connections: after that many runs
        a statement is prepared server-side under a name. Pass None behind a pooler that
        moves transactions between server connections without tracking named prepared
        statements (PgBouncer in transaction mode before 1.21, or with
        max_prepared_statements = 0); see README, "PgBouncer".
        """
        kwargs = pool_kwargs(dsn, prepare_threshold=prepare_threshold)
        self._setup(Settings.build(**options))
        pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
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
    def from_pool(cls, pool: ConnectionPool[Any], **options: Unpack[CounterOptions]) -> Self:
        """A counter on a pool the caller already has; closing the counter leaves it open."""
        self = cls.__new__(cls)
        self._setup(Settings.build(**options))
        self._pool = pool
        self._owns_pool = False
        return self

    def _setup(self, settings: Settings) -> None:
        self._settings = settings
        self._coalescer = Coalescer(per_project=not settings.batch_projects)
        self._coalesce_lock = threading.Lock()

    @property
    def pool(self) -> ConnectionPool[Any]:
        return self._pool

    def increment(self, project_id: int, delta: int = 1, *, conn: Connection | None = None) -> int:
        """Add `delta` to the project's counter and return the new value.

        The caller owns the numbers `value - delta + 1 … value`. Transient failures are
        retried with backoff (README: "Retries"); timeouts that outlast the retries or the
        deadline raise CounterTimeoutError. With `conn`, the increment joins that
        connection's open transaction and commits or rolls back with it.
        """
        project_id = check_project_id(project_id)
        delta = check_delta(delta)
        if conn is None and self._settings.coalesce:
            return self._coalesced(project_id, delta)
        return self._increment(project_id, delta, conn)

    def increment_many(
        self, deltas: Mapping[int, int], *, conn: Connection | None = None
    ) -> dict[int, int]:
        """Increment several projects in one round trip: {project_id: delta} -> new values.

        Row locks are taken in project_id order, so two batches never deadlock. All or
        nothing: one bad delta or one overflow and no counter moves.
        """
        project_ids, batch_deltas = check_batch(deltas)
        if not project_ids:
            return {}
        rows = self._call(calls.increment_many(project_ids, batch_deltas), project_ids, conn)
        return {int(project_id): int(value) for project_id, value in rows}

    def ensure_at_least(
        self, project_id: int, value: int, *, conn: Connection | None = None
    ) -> int:
        """Raise the project's counter to at least `value`, never lower it; return the counter.

        For a counter that fell behind numbers already used (imports, manual fixes): the
        next increment then hands out `value + 1` or more.
        """
        project_id = check_project_id(project_id)
        value = check_value(value)
        rows = self._call(calls.ensure(project_id, value), (project_id,), conn)
        return int(rows[0][0])

    def ensure_many(self, values: Mapping[int, int], *, conn: Connection | None = None) -> int:
        """`ensure_at_least` for many projects in one statement; returns how many moved."""
        project_ids, at_least = check_values(values)
        if not project_ids:
            return 0
        rows = self._call(calls.ensure_many(project_ids, at_least), project_ids, conn)
        return int(rows[0][0])

    def current(self, project_id: int, *, conn: Connection | None = None) -> int:
        """The last number handed out for the project; 0 if it never was incremented."""
        project_id = check_project_id(project_id)
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self._pool.connection())
            try:
                row = conn.execute(calls.CURRENT, (project_id,)).fetchone()
            except psycopg.Error as exc:
                raise_if_not_installed(exc)
                raise
        assert row is not None
        return int(row[0])

    def _increment(
        self, project_id: int, delta: int, conn: Connection | None, started: float | None = None
    ) -> int:
        rows = self._call(calls.increment(project_id, delta), (project_id,), conn, started)
        return int(rows[0][0])

    def _call(
        self,
        call: calls.Step,
        project_ids: Sequence[int],
        conn: Connection | None,
        started: float | None = None,
    ) -> Rows:
        """One function call, with the retry rules of `Attempts` (the `retried` flow)."""
        if conn is not None:
            check_caller_connection(conn.autocommit, conn.info.transaction_status)
        attempts = self._settings.attempts(
            tuple(project_ids), autonomous=conn is None, started=started
        )
        if conn is None:
            return self._drive(flows.retried(attempts), lambda: self._autonomous(call, attempts))
        caller = conn
        return self._drive(
            flows.retried(attempts),
            lambda: _in_caller_transaction(caller, call, attempts, self._settings.pipeline),
        )

    def _autonomous(self, call: calls.Step, attempts: Attempts) -> Rows:
        timeout_s = max(attempts.remaining_s(), 0.001)
        with self._pool.connection(timeout=timeout_s) as conn, _own_transaction(conn):
            statement_ms, lock_ms = attempts.start()
            try:
                plan = calls.autonomous(call, statement_ms, lock_ms)
                return _run(conn, plan, self._settings.pipeline)
            except BaseException:
                attempts.ended()
                raise

    def _coalesced(self, project_id: int, delta: int) -> int:
        flow = flows.coalesced(
            self._coalescer, self._coalesce_lock, self._settings, project_id, delta, _ThreadWaiter
        )
        return self._drive(flow)

    def _take(self, totals: dict[int, int], started: float) -> dict[int, int]:
        if len(totals) == 1:
            ((project_id, delta),) = totals.items()
            return {project_id: self._increment(project_id, delta, None, started)}
        project_ids, deltas = check_batch(totals)
        call = calls.increment_many(project_ids, deltas)
        rows = self._call(call, project_ids, None, started)
        return {int(project_id): int(value) for project_id, value in rows}

    def _drive(
        self, flow: Generator[flows.Op, Any, T], attempt: Callable[[], Rows] | None = None
    ) -> T:
        """Do what a flow asks, with threads, until it returns (see pgcounter.flows)."""
        op = next(flow)
        while True:
            try:
                if op is flows.ATTEMPT:
                    assert attempt is not None
                    outcome: Any = attempt()
                elif op is flows.CHECK_POOL:
                    self._pool.check()
                    outcome = None
                elif isinstance(op, flows.Sleep):
                    time.sleep(op.seconds)
                    outcome = None
                elif isinstance(op, flows.WaitFor):
                    assert isinstance(op.waiter, _ThreadWaiter)
                    outcome = op.waiter.event.wait(op.timeout_s)
                else:
                    assert isinstance(op, flows.Take)
                    outcome = self._take(op.totals, op.started)
            except BaseException as exc:
                try:
                    op = flow.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
            try:
                op = flow.send(outcome)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

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


def _send(
    conn: Connection, plan: tuple[calls.Step, ...], pipeline: bool
) -> psycopg.Cursor[Any] | None:
    """Send a plan in one pipeline: one round trip (one per step without libpq 14+); or,
    without `pipeline`, as one query string (`calls.one_query`)."""
    if not pipeline:
        return _send_as_one_query(conn, plan)
    result = None
    context = conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()
    with context:
        for step in plan:
            cursor = conn.execute(step.sql, step.params, prepare=step.prepare)
            if step.result:
                result = cursor
    return result


def _send_as_one_query(
    conn: Connection, plan: tuple[calls.Step, ...]
) -> psycopg.Cursor[Any] | None:
    """The plan as one query string: see `calls.OneQuery`."""
    query = calls.one_query(plan)
    cursor = psycopg.ClientCursor(conn)
    cursor.execute(query.sql, query.params, prepare=False)
    if query.result is None:
        return None
    for _ in range(query.result):
        cursor.nextset()
    return cursor


def _run(conn: Connection, plan: tuple[calls.Step, ...], pipeline: bool) -> Rows:
    cursor = _send(conn, plan, pipeline)
    assert cursor is not None
    return cursor.fetchall()


def _in_caller_transaction(
    conn: Connection, call: calls.Step, attempts: Attempts, pipeline: bool
) -> Rows:
    statement_ms, lock_ms = attempts.start()
    try:
        return _run(conn, calls.in_caller_transaction(call, statement_ms, lock_ms), pipeline)
    except BaseException:
        attempts.ended()
        if not conn.closed and conn.info.transaction_status == pq.TransactionStatus.INERROR:
            # Back to the caller's state before this attempt (an error, or an interrupt
            # that psycopg turned into a cancel); if even that fails, the original error
            # goes on and the caller's transaction is theirs to roll back.
            with contextlib.suppress(psycopg.Error):
                _send(conn, calls.UNDO_ATTEMPT, pipeline)
        raise


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
