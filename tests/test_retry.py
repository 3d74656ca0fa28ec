"""Statement timeouts under a real row lock: retried with backoff, then given up on."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool

from pgcounter import CounterTimeoutError, ProjectCounter, RetryPolicy
from pgcounter.metrics import STATEMENT_TIMEOUT_EXHAUSTED, STATEMENT_TIMEOUT_RETRY
from tests.conftest import RecordingMetrics
from tests.helpers import release_after, row_lock_held, statement_timeout


def test_timeout_then_retry_then_success(
    dsn: str, metrics: RecordingMetrics, pgcounter_logs: pytest.LogCaptureFixture
) -> None:
    with ProjectCounter(
        dsn,
        statement_timeout_ms=100,
        max_retries=10,
        backoff_base_ms=20,
        backoff_max_ms=100,
        metrics=metrics,
        max_size=2,
    ) as counter:
        counter.increment(1)  # the row exists: 1
        with row_lock_held(dsn, 1) as holder:  # another session's increment: 2, uncommitted
            releaser = release_after(holder, 0.45, commit=True)
            value = counter.increment(1)
            releaser.join()
        assert value == 3
        assert counter.current(1) == 3

    retries = [tags for key, _, tags in metrics.incrs if key == STATEMENT_TIMEOUT_RETRY]
    assert len(retries) >= 2  # 0.45 s of lock against 100 ms attempts
    assert retries == [{"attempt": str(n)} for n in range(1, len(retries) + 1)]
    assert STATEMENT_TIMEOUT_EXHAUSTED not in metrics.incr_keys()

    warnings = [r for r in pgcounter_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(retries)
    assert all(r.project_id == 1 for r in warnings)  # type: ignore[attr-defined]
    assert [r.attempt for r in warnings] == list(range(1, len(retries) + 1))  # type: ignore[attr-defined]
    assert all(0 <= r.sleep_ms <= 100 for r in warnings)  # type: ignore[attr-defined]
    assert "retrying in" in warnings[0].getMessage()
    assert not [r for r in pgcounter_logs.records if r.levelno >= logging.ERROR]


def test_timeout_exhausted_raises_and_changes_nothing(
    dsn: str, metrics: RecordingMetrics, pgcounter_logs: pytest.LogCaptureFixture
) -> None:
    with ProjectCounter(
        dsn,
        statement_timeout_ms=50,
        max_retries=2,
        backoff_base_ms=10,
        metrics=metrics,
        max_size=2,
    ) as counter:
        counter.increment(2, delta=5)
        # the lock is held for the whole call, then rolled back
        with row_lock_held(dsn, 2), pytest.raises(CounterTimeoutError) as info:
            counter.increment(2)
        assert counter.current(2) == 5
        assert counter.increment(2) == 6  # the counter works again once the lock is gone

    error = info.value
    assert error.project_id == 2
    assert error.attempts == 3
    assert isinstance(error.__cause__, psycopg.errors.QueryCanceled)
    assert "statement timeout" in str(error.__cause__)

    assert metrics.incrs == [
        (STATEMENT_TIMEOUT_RETRY, 1, {"attempt": "1"}),
        (STATEMENT_TIMEOUT_RETRY, 1, {"attempt": "2"}),
        (STATEMENT_TIMEOUT_EXHAUSTED, 1, None),
    ]
    levels = [r.levelno for r in pgcounter_logs.records if r.name == "pgcounter"]
    assert levels == [logging.WARNING, logging.WARNING, logging.ERROR]
    assert pgcounter_logs.records[-1].project_id == 2  # type: ignore[attr-defined]


def test_no_retries_means_one_attempt(dsn: str, metrics: RecordingMetrics) -> None:
    with ProjectCounter(dsn, statement_timeout_ms=30, max_retries=0, metrics=metrics) as counter:
        counter.increment(3)
        with row_lock_held(dsn, 3), pytest.raises(CounterTimeoutError) as info:
            counter.increment(3)
    assert info.value.attempts == 1
    assert metrics.incrs == [(STATEMENT_TIMEOUT_EXHAUSTED, 1, None)]


def test_a_failing_metrics_backend_does_not_fail_the_increment(
    dsn: str, pgcounter_logs: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def incr(self, key: str, amount: int = 1, tags: object = None) -> None:
            raise RuntimeError("statsd is down")

        def timing(self, key: str, value: float, tags: object = None) -> None:
            raise RuntimeError("statsd is down")

    with ProjectCounter(
        dsn,
        statement_timeout_ms=50,
        max_retries=20,
        backoff_base_ms=10,
        backoff_max_ms=20,
        metrics=Broken(),
    ) as counter:
        counter.increment(4)
        with row_lock_held(dsn, 4) as holder:
            release_after(holder, 0.2, commit=False)
            assert counter.increment(4) == 2
    assert any("metrics backend failed" in r.getMessage() for r in pgcounter_logs.records)


def test_statement_timeout_is_in_force_during_the_call(dsn: str) -> None:
    """Without a retry budget the blocked call ends after about the timeout, not the lock."""
    with ProjectCounter(dsn, statement_timeout_ms=200, max_retries=0) as counter:
        counter.increment(5)
        with row_lock_held(dsn, 5):
            done = threading.Event()
            errors: list[BaseException] = []

            def call() -> None:
                try:
                    counter.increment(5)
                except BaseException as exc:
                    errors.append(exc)
                done.set()

            threading.Thread(target=call, daemon=True).start()
            # The lock is held for up to 10 s; the call must end long before.
            assert done.wait(10)
        assert len(errors) == 1
        assert isinstance(errors[0], CounterTimeoutError)


class TestRetryPolicy:
    def test_full_jitter_stays_under_the_exponential_ceiling(self) -> None:
        policy = RetryPolicy(max_retries=6, backoff_base_ms=50, backoff_max_ms=1000)
        rng = random.Random(7)
        for retry, ceiling in [(1, 50), (2, 100), (3, 200), (4, 400), (5, 800), (6, 1000)]:
            samples = [policy.backoff_ms(retry, rng) for _ in range(500)]
            assert all(0 <= s <= ceiling for s in samples)
            assert max(samples) > 0.9 * ceiling  # uses the whole range...
            assert min(samples) < 0.1 * ceiling  # ...down to nearly nothing

    def test_same_seed_same_delays(self) -> None:
        policy = RetryPolicy()
        a = [policy.backoff_ms(n, random.Random(3)) for n in (1, 2, 3)]
        b = [policy.backoff_ms(n, random.Random(3)) for n in (1, 2, 3)]
        assert a == b

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_retries": -1},
            {"backoff_base_ms": 0},
            {"backoff_base_ms": -1},
            {"backoff_base_ms": 10, "backoff_max_ms": 5},
        ],
    )
    def test_bad_policy_is_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("prepare_threshold", [None, 0, 5])
def test_many_timeouts_on_one_connection_leave_it_usable(
    dsn: str, prepare_threshold: int | None
) -> None:
    """Timeouts at every point of psycopg's prepare counting must not break the connection."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if prepare_threshold is not None:
        kwargs["prepare_threshold"] = prepare_threshold
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs=kwargs, open=True) as pool:
        counter = ProjectCounter.from_pool(
            pool, statement_timeout_ms=40, max_retries=40, backoff_base_ms=5, backoff_max_ms=10
        )
        for expected in (1, 2):
            assert counter.increment(1) == expected
        with row_lock_held(dsn, 1) as holder:  # ≥ 8 timed-out attempts on the one connection
            release_after(holder, 0.6, commit=False)
            assert counter.increment(1) == 3
        assert [counter.increment(1) for _ in range(10)] == list(range(4, 14))


def test_after_exhaustion_the_pooled_connection_is_clean(dsn: str) -> None:
    with ProjectCounter(dsn, max_size=1, statement_timeout_ms=30, max_retries=1) as counter:
        counter.increment(1)
        with row_lock_held(dsn, 1), pytest.raises(CounterTimeoutError):
            counter.increment(1)
        with counter.pool.connection() as conn:
            assert statement_timeout(conn) == "0"
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert counter.increment(1) == 2


def test_timeouts_on_a_callers_non_autocommit_pool(dsn: str, metrics: RecordingMetrics) -> None:
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET statement_timeout = '7s'")
        conn.commit()

    with ConnectionPool(dsn, min_size=1, max_size=1, configure=configure, open=True) as pool:
        counter = ProjectCounter.from_pool(
            pool,
            statement_timeout_ms=30,
            max_retries=20,
            backoff_base_ms=5,
            backoff_max_ms=20,
            metrics=metrics,
        )
        counter.increment(1)
        with row_lock_held(dsn, 1) as holder:
            release_after(holder, 0.3, commit=True)
            assert counter.increment(1) == 3  # retried past the holder's 2
        with row_lock_held(dsn, 1), pytest.raises(CounterTimeoutError):
            counter.increment(1)
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            assert statement_timeout(conn) == "7s"  # (this SHOW opens a transaction)
    assert STATEMENT_TIMEOUT_RETRY in metrics.incr_keys()


def test_the_client_sleeps_the_backoff_it_logs(
    dsn: str, monkeypatch: pytest.MonkeyPatch, pgcounter_logs: pytest.LogCaptureFixture
) -> None:
    slept: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("pgcounter.client.time.sleep", recording_sleep)
    with ProjectCounter(
        dsn, statement_timeout_ms=30, max_retries=3, backoff_base_ms=40, rng=random.Random(1)
    ) as counter:
        counter.increment(1)
        with row_lock_held(dsn, 1), pytest.raises(CounterTimeoutError):
            counter.increment(1)
    logged = [r.sleep_ms for r in pgcounter_logs.records if hasattr(r, "sleep_ms")]
    assert len(slept) == 3
    assert slept == pytest.approx([ms / 1000 for ms in logged])
    expected_rng = random.Random(1)
    policy = RetryPolicy(max_retries=3, backoff_base_ms=40)
    assert logged == [policy.backoff_ms(n, expected_rng) for n in (1, 2, 3)]


def test_a_lock_timeout_is_not_a_statement_timeout(dsn: str, metrics: RecordingMetrics) -> None:
    """Only SQLSTATE 57014 is retried; a session's own lock_timeout (55P03) surfaces as is."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET lock_timeout = '20ms'")

    with ConnectionPool(
        dsn, min_size=1, max_size=1, configure=configure, kwargs={"autocommit": True}, open=True
    ) as pool:
        counter = ProjectCounter.from_pool(pool, statement_timeout_ms=5000, metrics=metrics)
        counter.increment(1)
        with row_lock_held(dsn, 1), pytest.raises(psycopg.errors.LockNotAvailable):
            counter.increment(1)
        assert counter.current(1) == 1
    assert metrics.incrs == []
