"""AsyncProjectCounter: the same behaviour as the sync client, on asyncio."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from pgcounter import CounterNotInstalledError, CounterTimeoutError
from pgcounter.aio import AsyncProjectCounter
from pgcounter.metrics import STATEMENT_TIMEOUT_EXHAUSTED, STATEMENT_TIMEOUT_RETRY
from tests.conftest import RecordingMetrics
from tests.helpers import release_after, row_lock_held

pytestmark = pytest.mark.asyncio


async def test_one_two_three_ranges_and_current(dsn: str) -> None:
    async with AsyncProjectCounter(dsn, max_size=2) as counter:
        assert [await counter.increment(1) for _ in range(3)] == [1, 2, 3]
        assert await counter.increment(1, delta=5) == 8
        assert await counter.current(1) == 8
        assert await counter.current(2) == 0
        assert await counter.increment_many({2: 2, 1: 1}) == {1: 9, 2: 2}


async def test_bad_input_fails_before_any_io(dsn: str) -> None:
    counter = AsyncProjectCounter(dsn)  # never opened: any I/O would fail
    with pytest.raises(ValueError, match="delta"):
        await counter.increment(1, 0)
    with pytest.raises(TypeError):
        await counter.increment("1")  # type: ignore[arg-type]
    assert await counter.increment_many({}) == {}


async def test_never_migrated(empty_dsn: str) -> None:
    async with AsyncProjectCounter(empty_dsn) as counter:
        with pytest.raises(CounterNotInstalledError):
            await counter.increment(1)


async def test_many_tasks_share_rounds_and_never_duplicate(
    dsn: str, metrics: RecordingMetrics
) -> None:
    tasks, calls = 64, 30
    async with AsyncProjectCounter(dsn, max_size=4, metrics=metrics) as counter:

        async def worker(seed: int) -> list[int]:
            rng = random.Random(seed)
            mine: list[int] = []
            for _ in range(calls):
                delta = rng.choice((1, 1, 2))
                value = await counter.increment(5, delta)
                mine.extend(range(value - delta + 1, value + 1))
            return mine

        results = await asyncio.gather(*(worker(i) for i in range(tasks)))
        final = await counter.current(5)
    numbers = [n for mine in results for n in mine]
    assert sorted(numbers) == list(range(1, final + 1))
    assert len(metrics.timings) < tasks * calls  # rounds were shared


async def test_without_coalescing(dsn: str, metrics: RecordingMetrics) -> None:
    async with AsyncProjectCounter(dsn, max_size=4, metrics=metrics, coalesce=False) as counter:
        values = await asyncio.gather(*(counter.increment(1) for _ in range(40)))
    assert sorted(values) == list(range(1, 41))
    assert len(metrics.timings) == 40


async def test_timeout_retry_then_success_and_exhaustion(
    dsn: str, metrics: RecordingMetrics
) -> None:
    async with AsyncProjectCounter(
        dsn,
        statement_timeout_ms=60,
        lock_timeout_ms=5000,
        max_retries=20,
        backoff_base_ms=10,
        backoff_max_ms=30,
        metrics=metrics,
    ) as counter:
        await counter.increment(1)
        with row_lock_held(dsn, 1) as holder:
            release_after(holder, 0.3, commit=True)
            assert await counter.increment(1) == 3
    assert STATEMENT_TIMEOUT_RETRY in metrics.incr_keys()

    exhausted = RecordingMetrics()
    async with AsyncProjectCounter(
        dsn, statement_timeout_ms=30, max_retries=1, metrics=exhausted
    ) as counter:
        with row_lock_held(dsn, 1), pytest.raises(CounterTimeoutError) as info:
            await counter.increment(1)
        assert await counter.current(1) == 3
    assert info.value.attempts == 2
    assert exhausted.incr_keys().count(STATEMENT_TIMEOUT_EXHAUSTED) == 1


async def test_cancelled_callers_never_strand_a_round(dsn: str) -> None:
    """Tasks queued behind a blocked round are cancelled, including the one that would lead
    the next round: the rest still get distinct numbers."""
    async with AsyncProjectCounter(dsn, max_size=4, statement_timeout_ms=10_000) as counter:
        await counter.increment(3)
        with row_lock_held(dsn, 3) as holder:
            leader = asyncio.create_task(counter.increment(3))
            await asyncio.sleep(0.05)  # the leader is now waiting for the row lock
            queued = [asyncio.create_task(counter.increment(3)) for _ in range(5)]
            await asyncio.sleep(0.05)
            queued[0].cancel()  # would have led the next round
            queued[2].cancel()
            await asyncio.sleep(0.05)
            holder.commit()  # 2
            values = await asyncio.gather(leader, *queued, return_exceptions=True)
        got = [v for v in values if isinstance(v, int)]
        cancelled = [v for v in values if isinstance(v, asyncio.CancelledError)]
        assert len(cancelled) == 2
        assert sorted(got) == [3, 4, 5, 6]
        assert await counter.increment(3) == 7


async def test_in_the_callers_transaction(dsn: str) -> None:
    async with (
        AsyncProjectCounter(dsn) as counter,
        await psycopg.AsyncConnection.connect(dsn) as caller,
    ):
        await caller.execute("SET lock_timeout = '1234ms'")
        assert await counter.increment(4, conn=caller) == 1
        assert await counter.increment_many({4: 2, 5: 1}, conn=caller) == {4: 3, 5: 1}
        cursor = await caller.execute("SHOW lock_timeout")
        assert await cursor.fetchone() == ("1234ms",)
        await caller.rollback()
        assert await counter.current(4) == 0
        await caller.set_autocommit(True)
        with pytest.raises(ValueError, match="inside a transaction"):
            await counter.increment(4, conn=caller)


async def test_from_a_callers_pool_nothing_leaks(dsn: str) -> None:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SET statement_timeout = '7s'")
        await conn.commit()

    async with AsyncConnectionPool(
        dsn, min_size=1, max_size=1, configure=configure, open=False
    ) as pool:
        counter = AsyncProjectCounter.from_pool(pool, statement_timeout_ms=40, max_retries=0)
        assert await counter.increment(6) == 1
        with row_lock_held(dsn, 6), pytest.raises(CounterTimeoutError):
            await counter.increment(6)
        await counter.close()  # leaves the caller's pool open
        async with pool.connection() as conn:
            assert conn.autocommit is False
            cursor = await conn.execute("SHOW statement_timeout")
            assert await cursor.fetchone() == ("7s",)


async def test_repair_never_lowers(dsn: str) -> None:
    async with AsyncProjectCounter(dsn) as counter:
        await counter.increment(8, delta=10)
        assert await counter.ensure_at_least(8, 30) == 30
        assert await counter.ensure_at_least(8, 3) == 30
        assert await counter.ensure_many({8: 31, 9: 4, 10: 0}) == 2
        assert await counter.increment(8) == 32
