"""Timeouts under a real row lock held by another session: retried with backoff, within a
budget, then given up on; and what gets reported on the way."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool

from pgcounter import CounterTimeoutError, Failure, ProjectCounter, RetryPolicy
from pgcounter.metrics import (
    DURATION,
    RETRY,
    STATEMENT_TIMEOUT_EXHAUSTED,
    STATEMENT_TIMEOUT_RETRY,
)
from pgcounter.retry import classify
from tests.conftest import RecordingMetrics
from tests.helpers import release_after, row_lock_held, statement_timeout

# statement_timeout fires first when the lock timeout is longer: the 57014 path
STATEMENT_FIRST = {"statement_timeout_ms": 100, "lock_timeout_ms": 5000}
# the default shape: the lock timeout fires first, 55P03
LOCK_FIRST = {"statement_timeout_ms": 1000, "lock_timeout_ms": 100}


def retry_tags(metrics: RecordingMetrics, key: str) -> list[dict[str, str] | None]:
    return [tags for k, _, tags in metrics.incrs if k == key]


@pytest.mark.parametrize(
    ("timeouts", "reason"),
    [(STATEMENT_FIRST, "statement_timeout"), (LOCK_FIRST, "lock_timeout")],
)
def test_lock_shorter_than_the_budget_retry_then_success(
    dsn: str,
    metrics: RecordingMetrics,
    pgcounter_logs: pytest.LogCaptureFixture,
    timeouts: dict[str, int],
    reason: str,
) -> None:
    with ProjectCounter(
        dsn,
        max_retries=10,
        backoff_base_ms=20,
        backoff_max_ms=100,
        metrics=metrics,
        statement_timeout_ms=timeouts["statement_timeout_ms"],
        lock_timeout_ms=timeouts["lock_timeout_ms"],
    ) as counter:
        counter.increment(1)  # the row exists: 1
        with row_lock_held(dsn, 1) as holder:  # another session's increment: 2, uncommitted
            releaser = release_after(holder, 0.45, commit=True)
            value = counter.increment(1)
            releaser.join()
        assert value == 3
        assert counter.current(1) == 3  # = the deltas of the three calls that succeeded

    retries = retry_tags(metrics, STATEMENT_TIMEOUT_RETRY)
    assert len(retries) >= 2  # 0.45 s of lock against 100 ms attempts
    assert retries == [{"attempt": str(n), "reason": reason} for n in range(1, len(retries) + 1)]
    assert retry_tags(metrics, RETRY) == retries
    assert STATEMENT_TIMEOUT_EXHAUSTED not in metrics.incr_keys()
    assert metrics.timings[-1][0] == DURATION
    assert metrics.timings[-1][2] == {"outcome": "ok", "attempts": str(len(retries) + 1)}
    assert metrics.timings[-1][1] >= 400  # ms: it waited for the lock

    warnings = [r for r in pgcounter_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(retries)
    for n, record in enumerate(warnings, start=1):
        fields = record.__dict__
        assert fields["project_id"] == 1
        assert fields["attempt"] == n
        assert fields["reason"] == reason
        assert fields["sqlstate"] == ("57014" if reason == "statement_timeout" else "55P03")
        assert 0 <= fields["sleep_ms"] <= 100
    assert not [r for r in pgcounter_logs.records if r.levelno >= logging.ERROR]


def test_lock_longer_than_the_budget_raises_and_changes_nothing(
    dsn: str, metrics: RecordingMetrics, pgcounter_logs: pytest.LogCaptureFixture
) -> None:
    with ProjectCounter(
        dsn,
        statement_timeout_ms=50,
        lock_timeout_ms=5000,
        max_retries=2,
        backoff_base_ms=10,
        metrics=metrics,
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
    assert error.__cause__.sqlstate == "57014"

    assert retry_tags(metrics, STATEMENT_TIMEOUT_RETRY) == [
        {"attempt": "1", "reason": "statement_timeout"},
        {"attempt": "2", "reason": "statement_timeout"},
    ]
    assert metrics.incr_keys().count(STATEMENT_TIMEOUT_EXHAUSTED) == 1
    outcomes = [tags for key, _, tags in metrics.timings if key == DURATION]
    assert outcomes[1] == {"outcome": "timeout_exhausted", "attempts": "3"}
    levels = [r.levelno for r in pgcounter_logs.records if r.name == "pgcounter"]
    assert levels == [logging.WARNING, logging.WARNING, logging.ERROR]
    assert pgcounter_logs.records[-1].__dict__["project_id"] == 2
    assert pgcounter_logs.records[-1].__dict__["sqlstate"] == "57014"


def test_the_deadline_ends_the_call_before_the_retries_run_out(
    dsn: str, metrics: RecordingMetrics
) -> None:
    with ProjectCounter(
        dsn,
        statement_timeout_ms=10_000,
        lock_timeout_ms=10_000,
        max_retries=50,
        deadline_ms=400,
        metrics=metrics,
    ) as counter:
        counter.increment(3)
        with row_lock_held(dsn, 3):
            started = time.monotonic()
            with pytest.raises(CounterTimeoutError):
                counter.increment(3)
            elapsed = time.monotonic() - started
        assert counter.current(3) == 1
    # The first attempt's timeouts were cut to the 400 ms deadline; no attempt ran past it.
    assert 0.39 <= elapsed < 2.0
    assert metrics.incr_keys().count(STATEMENT_TIMEOUT_EXHAUSTED) == 1


def test_no_retries_means_one_attempt(dsn: str, metrics: RecordingMetrics) -> None:
    with ProjectCounter(dsn, statement_timeout_ms=30, max_retries=0, metrics=metrics) as counter:
        counter.increment(3)
        with row_lock_held(dsn, 3), pytest.raises(CounterTimeoutError) as info:
            counter.increment(3)
    assert info.value.attempts == 1
    assert metrics.incr_keys() == [STATEMENT_TIMEOUT_EXHAUSTED]


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
            row = conn.execute("SHOW lock_timeout").fetchone()
            assert row == ("0",)
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
    logged = [r.__dict__["sleep_ms"] for r in pgcounter_logs.records if hasattr(r, "sleep_ms")]
    assert len(slept) == 3
    assert slept == pytest.approx([ms / 1000 for ms in logged])
    expected_rng = random.Random(1)
    policy = RetryPolicy(max_retries=3, backoff_base_ms=40)
    assert logged == [policy.backoff_ms(n, expected_rng) for n in (1, 2, 3)]


def test_a_session_lock_timeout_is_overridden_for_the_call(dsn: str) -> None:
    """A pool session's own lock_timeout does not shorten pgcounter's, nor survives it."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET lock_timeout = '20ms'")

    with ConnectionPool(
        dsn, min_size=1, max_size=1, configure=configure, kwargs={"autocommit": True}, open=True
    ) as pool:
        counter = ProjectCounter.from_pool(
            pool, statement_timeout_ms=2000, lock_timeout_ms=1500, max_retries=0
        )
        counter.increment(1)
        with row_lock_held(dsn, 1) as holder:
            release_after(holder, 0.3, commit=False)  # longer than 20 ms, shorter than 1.5 s
            assert counter.increment(1) == 2
        with pool.connection() as conn:
            assert conn.execute("SHOW lock_timeout").fetchone() == ("20ms",)


class TestClassify:
    """Classification by SQLSTATE (and, for 57014, the attempt's own timing)."""

    @pytest.mark.parametrize(
        ("error", "kind"),
        [
            (psycopg.errors.LockNotAvailable, Failure.LOCK_TIMEOUT),
            (psycopg.errors.DeadlockDetected, Failure.DEADLOCK),
            (psycopg.errors.SerializationFailure, Failure.SERIALIZATION),
            (psycopg.errors.AdminShutdown, Failure.CONNECTION),
            (psycopg.errors.CrashShutdown, Failure.CONNECTION),
            (psycopg.errors.CannotConnectNow, Failure.CONNECTION),
            (psycopg.errors.ConnectionFailure, Failure.CONNECTION),
            (psycopg.errors.IdleSessionTimeout, Failure.CONNECTION),
            (psycopg.errors.ReadOnlySqlTransaction, Failure.FATAL),
            (psycopg.errors.InsufficientPrivilege, Failure.FATAL),
            (psycopg.errors.UndefinedFunction, Failure.FATAL),
            (psycopg.errors.InvalidParameterValue, Failure.FATAL),
            (psycopg.errors.NumericValueOutOfRange, Failure.FATAL),
        ],
    )
    def test_by_sqlstate(self, error: type[psycopg.Error], kind: Failure) -> None:
        assert classify(error("x"), 5.0, 3000) is kind

    def test_57014_after_the_timeout_is_a_timeout_before_it_a_cancel(self) -> None:
        canceled = psycopg.errors.QueryCanceled("x")
        assert classify(canceled, 3000.2, 3000) is Failure.STATEMENT_TIMEOUT
        assert classify(canceled, 2999.5, 3000) is Failure.STATEMENT_TIMEOUT  # clock grain
        assert classify(canceled, 2990.0, 3000) is Failure.FATAL
        assert classify(canceled, 2500.0, 3000) is Failure.FATAL

    def test_the_pools_own_errors_are_not_a_lost_connection(self) -> None:
        import psycopg_pool

        for error in (
            psycopg_pool.PoolTimeout,
            psycopg_pool.PoolClosed,
            psycopg_pool.TooManyRequests,
        ):
            assert classify(error("x"), 1.0, 3000) is Failure.FATAL

    def test_a_lost_socket_has_no_sqlstate(self) -> None:
        assert classify(psycopg.OperationalError("gone"), 1.0, 3000) is Failure.CONNECTION
        assert classify(psycopg.InterfaceError("misuse"), 1.0, 3000) is Failure.FATAL


class TestRetryPolicy:
    def test_full_jitter_stays_under_the_exponential_ceiling(self) -> None:
        policy = RetryPolicy(max_retries=6, backoff_base_ms=50, backoff_max_ms=1000)
        rng = random.Random(7)
        for retry, ceiling in [(1, 50), (2, 100), (3, 200), (4, 400), (5, 800), (6, 1000)]:
            samples = [policy.backoff_ms(retry, rng) for _ in range(500)]
            assert all(0 <= s <= ceiling for s in samples)
            assert max(samples) > 0.9 * ceiling  # uses the whole range...
            assert min(samples) < 0.1 * ceiling  # ...down to nearly nothing

    def test_default_sleeps_add_at_most_350_ms(self) -> None:
        policy = RetryPolicy()
        worst = random.Random()
        worst.uniform = lambda a, b: b  # type: ignore[method-assign]
        assert sum(policy.backoff_ms(n, worst) for n in (1, 2, 3)) == 350

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
            {"deadline_ms": 0},
        ],
    )
    def test_bad_policy_is_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_default_lock_timeout_fires_before_the_statement_timeout(
    dsn: str, metrics: RecordingMetrics
) -> None:
    with ProjectCounter(dsn, statement_timeout_ms=600, max_retries=0, metrics=metrics) as counter:
        counter.increment(1)
        with row_lock_held(dsn, 1), pytest.raises(CounterTimeoutError) as info:
            counter.increment(1)
    assert isinstance(info.value.__cause__, psycopg.errors.LockNotAvailable)
    assert metrics.timings[-1][1] < 600  # ms: the 5/6 lock timeout (500 ms) ended it


def test_waiting_for_a_pooled_connection_is_bounded_by_the_deadline(
    dsn: str, metrics: RecordingMetrics
) -> None:
    with ProjectCounter(dsn, max_size=1, deadline_ms=300, metrics=metrics) as counter:
        with counter.pool.connection():  # someone else has the only connection
            started = time.monotonic()
            with pytest.raises(CounterTimeoutError) as info:
                counter.increment(1)
            elapsed = time.monotonic() - started
        assert counter.current(1) == 0
    assert 0.25 <= elapsed < 2.0
    assert type(info.value.__cause__).__name__ == "PoolTimeout"
    assert metrics.incr_keys() == [STATEMENT_TIMEOUT_EXHAUSTED]
    assert metrics.timings[-1][2] == {"outcome": "timeout_exhausted", "attempts": "1"}


def test_a_closed_counter_fails_at_once(dsn: str, metrics: RecordingMetrics) -> None:
    counter = ProjectCounter(dsn, metrics=metrics)
    counter.close()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="closed"):
        counter.increment(1)
    assert time.monotonic() - started < 1.0
    assert RETRY not in metrics.incr_keys()
