"""What `pgcounter bench` measures: pgcounter's modes and the alternatives it replaces.

The alternatives run client-side statements on tables of their own (sql/bench/baseline.sql),
as the component pgcounter replaces did; they are baselines, not pgcounter code.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, LiteralString

import psycopg

from pgcounter.aio import AsyncProjectCounter
from pgcounter.blocks import BlockCounter
from pgcounter.client import ProjectCounter
from pgcounter.metrics import RETRY, Tags

SyncWorker = Callable[[int], int]
AsyncWorker = Callable[[int], Awaitable[int]]

MODES: Final = ("plain", "coalesced", "batched", "blocks")
ALTERNATIVES: Final = ("original", "for_update", "pgbench")

# The original fix's path, five round trips: BEGIN and SHOW go together as one query.
ORIGINAL_BEGIN_SHOW: Final[LiteralString] = "BEGIN; SHOW statement_timeout"
ORIGINAL_COMMIT: Final[LiteralString] = "COMMIT"
ORIGINAL_ROLLBACK: Final[LiteralString] = "ROLLBACK"
ORIGINAL_SET: Final[LiteralString] = "SELECT set_config('statement_timeout', %s, true)"
ORIGINAL_UPSERT: Final[LiteralString] = (
    "INSERT INTO pgcounter_bench.original_counter AS c (project_id, value) VALUES (%s, 1)"
    " ON CONFLICT (project_id) DO UPDATE SET value = c.value + 1 RETURNING c.value"
)
# Read-modify-write under a row lock.
RMW_LOCK: Final[LiteralString] = (
    "SELECT value FROM pgcounter_bench.rmw_counter WHERE project_id = %s FOR UPDATE"
)
RMW_CREATE: Final[LiteralString] = (
    "INSERT INTO pgcounter_bench.rmw_counter (project_id, value) VALUES (%s, 0)"
    " ON CONFLICT (project_id) DO NOTHING"
)
RMW_WRITE: Final[LiteralString] = (
    "UPDATE pgcounter_bench.rmw_counter SET value = %s WHERE project_id = %s"
)


class CountingMetrics:
    """Counts retries for the report; thread-safe enough (one lock, rare path)."""

    def __init__(self) -> None:
        self.retries = 0
        self._lock = threading.Lock()

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None:
        if key == RETRY:
            with self._lock:
                self.retries += amount

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None:
        return None


class Contender:
    """One thing measured. Threads call `worker()` once each; tasks `async_worker()`."""

    name = ""
    is_pgcounter = False
    sub_microsecond = False

    def __init__(self, dsn: str, workers: int) -> None:
        self.dsn = dsn
        self.workers = workers
        self.metrics = CountingMetrics()

    def worker(self) -> SyncWorker:
        raise NotImplementedError

    async def async_worker(self) -> AsyncWorker:
        raise NotImplementedError(f"{self.name} has no async form")

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class PgcounterMode(Contender):
    is_pgcounter = True

    def __init__(self, dsn: str, workers: int, mode: str) -> None:
        super().__init__(dsn, workers)
        self.name = mode
        self._mode = mode
        self._counter: ProjectCounter | None = None
        self._async_counter: AsyncProjectCounter | None = None
        self._blocks: BlockCounter | None = None
        self.sub_microsecond = mode == "blocks"

    def _options(self) -> dict[str, Any]:
        return {
            "min_size": min(self.workers, 32),
            "max_size": min(self.workers, 32),
            "coalesce": self._mode != "plain",
            "batch_projects": self._mode == "batched",
            "metrics": self.metrics,
        }

    def worker(self) -> SyncWorker:
        if self._counter is None:
            self._counter = ProjectCounter(self.dsn, **self._options())
            if self._mode == "blocks":
                self._blocks = BlockCounter(self._counter)
        if self._blocks is not None:
            return self._blocks.next
        return self._counter.increment

    async def async_worker(self) -> AsyncWorker:
        if self._mode == "blocks":
            raise NotImplementedError("blocks mode is thread-based; run it without --async")
        if self._async_counter is None:
            self._async_counter = AsyncProjectCounter(self.dsn, **self._options())
            await self._async_counter.open()
        return self._async_counter.increment

    def close(self) -> None:
        if self._counter is not None:
            self._counter.close()

    async def aclose(self) -> None:
        if self._async_counter is not None:
            await self._async_counter.close()


class Original(Contender):
    """BEGIN; SHOW statement_timeout; SET LOCAL …; INSERT … ON CONFLICT … RETURNING;
    SET LOCAL …; COMMIT — the path of the fix pgcounter replaces."""

    name = "original"

    def __init__(self, dsn: str, workers: int) -> None:
        super().__init__(dsn, workers)
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def worker(self) -> SyncWorker:
        conn = psycopg.connect(self.dsn, autocommit=True)
        with self._lock:
            self._connections.append(conn)

        def increment(project_id: int) -> int:
            try:
                cursor = conn.execute(ORIGINAL_BEGIN_SHOW)
                cursor.nextset()  # the SHOW's result
                row = cursor.fetchone()
                assert row is not None
                conn.execute(ORIGINAL_SET, ("3000",))
                result = conn.execute(ORIGINAL_UPSERT, (project_id,)).fetchone()
                conn.execute(ORIGINAL_SET, (row[0],))
                conn.execute(ORIGINAL_COMMIT)
            except BaseException:
                conn.execute(ORIGINAL_ROLLBACK)
                raise
            assert result is not None
            return int(result[0])

        return increment

    def close(self) -> None:
        for conn in self._connections:
            conn.close()


class ForUpdate(Original):
    """BEGIN; SELECT value … FOR UPDATE; UPDATE … SET value = value + 1; COMMIT."""

    name = "for_update"

    def worker(self) -> SyncWorker:
        conn = psycopg.connect(self.dsn)  # psycopg sends BEGIN before the SELECT
        with self._lock:
            self._connections.append(conn)

        def increment(project_id: int) -> int:
            try:
                row = conn.execute(RMW_LOCK, (project_id,)).fetchone()
                if row is None:
                    conn.execute(RMW_CREATE, (project_id,))
                    row = conn.execute(RMW_LOCK, (project_id,)).fetchone()
                assert row is not None
                value = int(row[0]) + 1
                conn.execute(RMW_WRITE, (value, project_id))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return value

        return increment
