"""The asyncio client: `AsyncProjectCounter` over psycopg's AsyncConnectionPool.

Same API, modes, retries, metrics and coalescing as `ProjectCounter`: the decisions are the
shared sans-I/O pieces (`calls` plans, `retry.Attempts`, `coalesce.Coalescer`, `options`);
this module only does their I/O with `await`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

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

AsyncConnection = psycopg.AsyncConnection[Any]
Rows = list[tuple[Any, ...]]
T = TypeVar("T")


class _TaskWaiter(Waiter):
    __slots__ = ("done",)

    def __init__(self) -> None:
        super().__init__()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class AsyncProjectCounter:
    """`ProjectCounter` for asyncio: `async with AsyncProjectCounter(dsn) as counter:`."""

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
        """See `ProjectCounter`, `prepare_threshold` included; the pool opens on `open()`."""
        kwargs = pool_kwargs(dsn, prepare_threshold=prepare_threshold)
        self._setup(Settings.build(**options))
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            name="pgcounter",
        )
        self._owns_pool = True
        self._connect_timeout_s = connect_timeout_s

    @classmethod
    def from_pool(cls, pool: AsyncConnectionPool[Any], **options: Unpack[CounterOptions]) -> Self:
        """A counter on a pool the caller already has (and opens, and closes)."""
        self = cls.__new__(cls)
        self._setup(Settings.build(**options))
        self._pool = pool
        self._owns_pool = False
        self._connect_timeout_s = 0.0
        return self

    def _setup(self, settings: Settings) -> None:
        self._settings = settings
        self._coalescer = Coalescer(per_project=not settings.batch_projects)
        # Never contended on one event loop, and never held across an await.
        self._coalesce_lock = threading.Lock()

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        return self._pool

    async def open(self) -> None:
        """Open the pool it owns (`async with` does this)."""
        if self._owns_pool:
            try:
                await self._pool.open(wait=True, timeout=self._connect_timeout_s)
            except BaseException:
                await self._pool.close()
                raise

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def increment(
        self, project_id: int, delta: int = 1, *, conn: AsyncConnection | None = None
    ) -> int:
        """See `ProjectCounter.increment`."""
        project_id = check_project_id(project_id)
        delta = check_delta(delta)
        if conn is None and self._settings.coalesce:
            return await self._coalesced(project_id, delta)
        return await self._increment(project_id, delta, conn)

    async def increment_many(
        self, deltas: Mapping[int, int], *, conn: AsyncConnection | None = None
    ) -> dict[int, int]:
        """See `ProjectCounter.increment_many`."""
        project_ids, batch_deltas = check_batch(deltas)
        if not project_ids:
            return {}
        call = calls.increment_many(project_ids, batch_deltas)
        rows = await self._call(call, project_ids, conn)
        return {int(project_id): int(value) for project_id, value in rows}

    async def ensure_at_least(
        self, project_id: int, value: int, *, conn: AsyncConnection | None = None
    ) -> int:
        """Raise the project's counter to at least `value`, never lower it; return the counter.

        For a counter that fell behind numbers already used (imports, manual fixes): the
        next increment then hands out `value + 1` or more.
        """
        project_id = check_project_id(project_id)
        value = check_value(value)
        rows = await self._call(calls.ensure(project_id, value), (project_id,), conn)
        return int(rows[0][0])

    async def ensure_many(
        self, values: Mapping[int, int], *, conn: AsyncConnection | None = None
    ) -> int:
        """`ensure_at_least` for many projects in one statement; returns how many moved."""
        project_ids, at_least = check_values(values)
        if not project_ids:
            return 0
        rows = await self._call(calls.ensure_many(project_ids, at_least), project_ids, conn)
        return int(rows[0][0])

    async def current(self, project_id: int, *, conn: AsyncConnection | None = None) -> int:
        """See `ProjectCounter.current`."""
        project_id = check_project_id(project_id)
        async with contextlib.AsyncExitStack() as stack:
            connection = (
                conn
                if conn is not None
                else await stack.enter_async_context(self._pool.connection())
            )
            try:
                cursor = await connection.execute(calls.CURRENT, (project_id,))
                row = await cursor.fetchone()
            except psycopg.Error as exc:
                raise_if_not_installed(exc)
                raise
        assert row is not None
        return int(row[0])

    async def _increment(
        self,
        project_id: int,
        delta: int,
        conn: AsyncConnection | None,
        started: float | None = None,
    ) -> int:
        rows = await self._call(calls.increment(project_id, delta), (project_id,), conn, started)
        return int(rows[0][0])

    async def _call(
        self,
        call: calls.Step,
        project_ids: Sequence[int],
        conn: AsyncConnection | None,
        started: float | None = None,
    ) -> Rows:
        """See `ProjectCounter._call`: the same `retried` flow, driven with asyncio."""
        if conn is not None:
            check_caller_connection(conn.autocommit, conn.info.transaction_status)
        attempts = self._settings.attempts(
            tuple(project_ids), autonomous=conn is None, started=started
        )
        if conn is None:
            return await self._drive(
                flows.retried(attempts), lambda: self._autonomous(call, attempts)
            )
        caller = conn
        return await self._drive(
            flows.retried(attempts),
            lambda: _in_caller_transaction(caller, call, attempts, self._settings.pipeline),
        )

    async def _autonomous(self, call: calls.Step, attempts: Attempts) -> Rows:
        timeout_s = max(attempts.remaining_s(), 0.001)
        async with self._pool.connection(timeout=timeout_s) as conn, _own_transaction(conn):
            statement_ms, lock_ms = attempts.start()
            try:
                plan = calls.autonomous(call, statement_ms, lock_ms)
                return await _run(conn, plan, self._settings.pipeline)
            except BaseException:
                attempts.ended()
                raise

    async def _coalesced(self, project_id: int, delta: int) -> int:
        flow = flows.coalesced(
            self._coalescer, self._coalesce_lock, self._settings, project_id, delta, _TaskWaiter
        )
        return await self._drive(flow)

    async def _take(self, totals: dict[int, int], started: float) -> dict[int, int]:
        if len(totals) == 1:
            ((project_id, delta),) = totals.items()
            return {project_id: await self._increment(project_id, delta, None, started)}
        project_ids, deltas = check_batch(totals)
        call = calls.increment_many(project_ids, deltas)
        rows = await self._call(call, project_ids, None, started)
        return {int(project_id): int(value) for project_id, value in rows}

    async def _drive(
        self,
        flow: Generator[flows.Op, Any, T],
        attempt: Callable[[], Awaitable[Rows]] | None = None,
    ) -> T:
        """Do what a flow asks, with asyncio, until it returns (see pgcounter.flows)."""
        op = next(flow)
        while True:
            try:
                if op is flows.ATTEMPT:
                    assert attempt is not None
                    outcome: Any = await attempt()
                elif op is flows.CHECK_POOL:
                    await self._pool.check()
                    outcome = None
                elif isinstance(op, flows.Sleep):
                    await asyncio.sleep(op.seconds)
                    outcome = None
                elif isinstance(op, flows.WaitFor):
                    assert isinstance(op.waiter, _TaskWaiter)
                    try:
                        await asyncio.wait_for(asyncio.shield(op.waiter.done), op.timeout_s)
                        outcome = True
                    except TimeoutError:
                        outcome = False
                else:
                    assert isinstance(op, flows.Take)
                    outcome = await self._take(op.totals, op.started)
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


async def _send(
    conn: AsyncConnection, plan: tuple[calls.Step, ...], pipeline: bool
) -> psycopg.AsyncCursor[Any] | None:
    """See the sync client's."""
    if not pipeline:
        return await _send_as_one_query(conn, plan)
    result = None
    context = conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()
    async with context:
        for step in plan:
            cursor = await conn.execute(step.sql, step.params, prepare=step.prepare)
            if step.result:
                result = cursor
    return result


async def _send_as_one_query(
    conn: AsyncConnection, plan: tuple[calls.Step, ...]
) -> psycopg.AsyncCursor[Any] | None:
    """The plan as one query string: see `calls.OneQuery`."""
    query = calls.one_query(plan)
    cursor = psycopg.AsyncClientCursor(conn)
    await cursor.execute(query.sql, query.params, prepare=False)
    if query.result is None:
        return None
    for _ in range(query.result):
        cursor.nextset()
    return cursor


async def _run(conn: AsyncConnection, plan: tuple[calls.Step, ...], pipeline: bool) -> Rows:
    cursor = await _send(conn, plan, pipeline)
    assert cursor is not None
    return await cursor.fetchall()


async def _in_caller_transaction(
    conn: AsyncConnection, call: calls.Step, attempts: Attempts, pipeline: bool
) -> Rows:
    statement_ms, lock_ms = attempts.start()
    try:
        plan = calls.in_caller_transaction(call, statement_ms, lock_ms)
        return await _run(conn, plan, pipeline)
    except BaseException:
        attempts.ended()
        if not conn.closed and conn.info.transaction_status == pq.TransactionStatus.INERROR:
            with contextlib.suppress(psycopg.Error):
                await _send(conn, calls.UNDO_ATTEMPT, pipeline)
        raise


@contextlib.asynccontextmanager
async def _own_transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """See the sync client's: the connection goes back idle (or closed) and as it was."""
    was_autocommit = conn.autocommit
    if not was_autocommit:
        await conn.set_autocommit(True)
    try:
        yield
    finally:
        await _back_to_idle(conn)
        if not was_autocommit and not conn.closed:
            await conn.set_autocommit(False)


def _idle(conn: AsyncConnection) -> bool:
    return conn.info.transaction_status == pq.TransactionStatus.IDLE


async def _back_to_idle(conn: AsyncConnection) -> None:
    if conn.closed or _idle(conn):
        return
    try:
        await conn.execute(calls.ROLLBACK, prepare=False)
    except psycopg.Error:
        await conn.close()
        return
    except BaseException:
        await conn.close()
        raise
    if not _idle(conn):
        await conn.close()
