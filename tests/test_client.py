"""The synchronous client against a real server: numbers, ranges, errors, scoping."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool

from pgcounter import CounterNotInstalledError, ProjectCounter
from tests.helpers import statement_timeout


def test_hands_out_one_two_three(counter: ProjectCounter) -> None:
    assert [counter.increment(1) for _ in range(3)] == [1, 2, 3]
    assert counter.current(1) == 3


def test_projects_are_independent(counter: ProjectCounter) -> None:
    assert counter.increment(1) == 1
    assert counter.increment(2) == 1
    assert counter.increment(1) == 2
    assert counter.current(2) == 1


def test_delta_hands_out_a_contiguous_range(counter: ProjectCounter) -> None:
    first = counter.increment(3, delta=5)
    assert first == 5  # the caller owns 1..5
    second = counter.increment(3, delta=10)
    assert second == 15  # the caller owns 6..15
    assert counter.increment(3) == 16


def test_current_of_unknown_project_is_zero(counter: ProjectCounter) -> None:
    assert counter.current(123456) == 0


def test_extreme_project_ids_are_fine(counter: ProjectCounter) -> None:
    assert counter.increment(-(2**63)) == 1
    assert counter.increment(2**63 - 1) == 1


@pytest.mark.parametrize(
    ("project_id", "delta", "error"),
    [
        (1, 0, ValueError),
        (1, -1, ValueError),
        (1, 2**63, ValueError),
        (2**63, 1, ValueError),
        (-(2**63) - 1, 1, ValueError),
        ("1", 1, TypeError),
        (1, 1.0, TypeError),
        (True, 1, TypeError),
        (1, True, TypeError),
        (None, 1, TypeError),
    ],
)
def test_bad_input_fails_before_any_io(dsn: str, project_id: Any, delta: Any, error: type) -> None:
    counter = ProjectCounter(dsn, min_size=1, max_size=1)
    counter.close()  # any I/O now would raise PoolClosed, not the error below
    with pytest.raises(error):
        counter.increment(project_id, delta)


def test_bad_input_changes_nothing(counter: ProjectCounter) -> None:
    counter.increment(8, delta=2)
    with pytest.raises(ValueError, match="delta must be at least 1"):
        counter.increment(8, delta=0)
    assert counter.current(8) == 2


def test_server_side_error_is_not_retried(counter: ProjectCounter, metrics: Any) -> None:
    counter.increment(9, delta=2**63 - 1)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        counter.increment(9)
    assert metrics.incrs == []
    assert counter.current(9) == 2**63 - 1


def test_never_migrated_database_gives_a_precise_error(empty_dsn: str) -> None:
    with ProjectCounter(empty_dsn, max_size=1) as counter:
        with pytest.raises(CounterNotInstalledError, match="pgcounter migrate"):
            counter.increment(1)
        with pytest.raises(CounterNotInstalledError):
            counter.current(1)


def test_statement_timeout_does_not_leak_into_the_pool(dsn: str) -> None:
    with ProjectCounter(dsn, max_size=1, statement_timeout_ms=1234) as counter:
        counter.increment(1)
        with counter.pool.connection() as conn:
            assert statement_timeout(conn) == "0"
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_callers_session_settings_survive_on_a_shared_pool(dsn: str) -> None:
    """A caller's pool with its own session statement_timeout and non-autocommit connections."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET statement_timeout = '7s'")
        conn.commit()

    with ConnectionPool(dsn, min_size=1, max_size=1, configure=configure, open=True) as pool:
        counter = ProjectCounter.from_pool(pool, statement_timeout_ms=500)
        assert counter.increment(4) == 1
        assert counter.increment(4, delta=2) == 3
        counter.close()  # a borrowed pool stays open
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert statement_timeout(conn) == "7s"
            row = conn.execute("SELECT pgcounter.current_project_counter(4)").fetchone()
            assert row == (3,)


def test_from_pool_does_not_close_the_pool(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        with ProjectCounter.from_pool(pool) as counter:
            counter.increment(1)
        assert not pool.closed


def test_increment_is_committed_on_its_own(counter: ProjectCounter, dsn: str) -> None:
    counter.increment(6)
    with psycopg.connect(dsn) as other:
        assert other.execute("SELECT pgcounter.current_project_counter(6)").fetchone() == (1,)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"statement_timeout_ms": 0}, ValueError),
        ({"statement_timeout_ms": 1.5}, TypeError),
        ({"max_retries": -1}, ValueError),
        ({"backoff_base_ms": 0}, ValueError),
        ({"backoff_base_ms": 100, "backoff_max_ms": 50}, ValueError),
    ],
)
def test_bad_options_are_refused(dsn: str, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        ProjectCounter(dsn, **kwargs)


def test_default_isolation_of_the_database_does_not_matter(dsn: str, db: Any) -> None:
    """A database defaulting to REPEATABLE READ would turn contention into 40001 errors."""
    db.execute(
        psycopg.sql.SQL(
            "ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'"
        ).format(psycopg.sql.Identifier(db.info.dbname))
    )
    with ProjectCounter(dsn, min_size=8, max_size=8) as counter:
        with counter.pool.connection() as conn:
            row = conn.execute("SHOW default_transaction_isolation").fetchone()
            assert row == ("repeatable read",)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(50):
                    counter.increment(1)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert counter.current(1) == 400


def test_one_round_trip_per_increment(dsn: str, tmp_path: Path) -> None:
    """libpq's own trace of the wire: one Sync sent and one ReadyForQuery back per call."""
    trace = tmp_path / "libpq.trace"
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        counter = ProjectCounter.from_pool(pool)
        for _ in range(10):  # past psycopg's prepare threshold: the steady state
            counter.increment(1)
        with trace.open("w") as out:
            with pool.connection() as conn:  # the pool's only connection, traced from now on
                conn.pgconn.trace(out.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            assert counter.increment(1) == 11
            with pool.connection() as conn:
                conn.pgconn.untrace()
    lines = trace.read_text().splitlines()
    sent = [line.split("\t")[2].split(" ")[0] for line in lines if line.startswith("F\t")]
    received = [line.split("\t")[2].split(" ")[0] for line in lines if line.startswith("B\t")]
    assert sent.count("Sync") == 1, lines
    assert received.count("ReadyForQuery") == 1, lines
    assert sent.count("Execute") == 4, lines
