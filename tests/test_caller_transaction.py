"""`increment(..., conn=caller_connection)`: the number joins the caller's transaction."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgcounter import CounterTimeoutError, ProjectCounter
from pgcounter.metrics import RETRY
from tests.conftest import RecordingMetrics
from tests.helpers import release_after, row_lock_held, statement_timeout

CounterFactory = Callable[..., ProjectCounter]


@pytest.fixture(params=[True, False], ids=["pipeline", "one-query"])
def make_counter(request: pytest.FixtureRequest) -> CounterFactory:
    """Every test here runs with both ways of sending a call: the pipeline (the default) and
    one query string (`pipeline=False`, for PgBouncer)."""
    return functools.partial(ProjectCounter, pipeline=request.param)


@pytest.fixture
def counter(
    make_counter: CounterFactory, dsn: str, metrics: RecordingMetrics
) -> Iterator[ProjectCounter]:
    with make_counter(dsn, max_size=4, metrics=metrics) as c:
        yield c


Conn = psycopg.Connection[Any]


@pytest.fixture
def caller(dsn: str) -> Iterator[Conn]:
    """The application's own connection, non-autocommit as psycopg makes it by default."""
    with psycopg.connect(dsn) as conn:
        yield conn


def lock_timeout(conn: Conn) -> str:
    row = conn.execute("SHOW lock_timeout").fetchone()
    assert row is not None
    return str(row[0])


def test_rollback_of_the_callers_transaction_undoes_the_increment(
    counter: ProjectCounter, caller: Conn
) -> None:
    assert counter.increment(1, conn=caller) == 1
    assert counter.increment(1, delta=4, conn=caller) == 5
    assert counter.current(1, conn=caller) == 5  # visible inside the transaction...
    assert counter.current(1) == 0  # ...and nowhere else yet
    caller.rollback()
    assert counter.current(1) == 0
    assert counter.increment(1) == 1  # gapless: the rolled-back numbers are handed out again


def test_commit_of_the_callers_transaction_keeps_it(counter: ProjectCounter, caller: Conn) -> None:
    caller.execute("CREATE TEMP TABLE issue (short_id bigint)")
    number = counter.increment(2, conn=caller)
    caller.execute("INSERT INTO issue VALUES (%s)", (number,))
    caller.commit()
    assert counter.current(2) == 1
    assert caller.execute("SELECT short_id FROM issue").fetchall() == [(1,)]


def test_the_callers_settings_are_exactly_restored(counter: ProjectCounter, caller: Conn) -> None:
    caller.execute("SET lock_timeout = '1234ms'")  # session level
    caller.execute("SET LOCAL statement_timeout = '4s'")  # this transaction only
    assert counter.increment(3, conn=caller) == 1
    assert statement_timeout(caller) == "4s"
    assert lock_timeout(caller) == "1234ms"
    caller.commit()
    assert statement_timeout(caller) == "0"  # the LOCAL value ended with the transaction
    assert lock_timeout(caller) == "1234ms"
    assert counter.current(3) == 1


def test_an_autocommit_connection_needs_an_explicit_transaction(
    counter: ProjectCounter, dsn: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(ValueError, match="conn= must be inside a transaction"):
            counter.increment(4, conn=conn)
        assert counter.current(4) == 0
        with conn.transaction():
            assert counter.increment(4, conn=conn) == 1
        assert counter.current(4) == 1


def test_a_timeout_inside_the_savepoint_is_retried_and_the_transaction_survives(
    make_counter: CounterFactory, dsn: str, caller: Conn, metrics: RecordingMetrics
) -> None:
    caller.execute("SET lock_timeout = '777ms'")
    caller.execute("CREATE TEMP TABLE work (n int)")
    caller.execute("INSERT INTO work VALUES (1)")  # the caller's own work, before the call
    with make_counter(
        dsn,
        statement_timeout_ms=1000,
        lock_timeout_ms=60,
        backoff_base_ms=20,
        max_retries=20,
        metrics=metrics,
    ) as counter:
        counter.increment(5)
        with row_lock_held(dsn, 5) as holder:
            release_after(holder, 0.3, commit=True)
            assert counter.increment(5, conn=caller) == 3
        caller.execute("INSERT INTO work VALUES (2)")  # still usable
        assert lock_timeout(caller) == "777ms"
        # every failed attempt's savepoint was released, not just rolled back to
        with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
            caller.execute("RELEASE SAVEPOINT pgcounter_increment")
        caller.rollback()  # (which also undid this transaction's number 3)
        caller.execute("CREATE TEMP TABLE work (n int)")
        caller.execute("INSERT INTO work VALUES (1), (2)")
        assert counter.increment(5, conn=caller) == 3
        caller.commit()
        assert counter.current(5) == 3
    assert caller.execute("SELECT n FROM work ORDER BY n").fetchall() == [(1,), (2,)]
    assert [tags["reason"] for key, _, tags in metrics.incrs if key == RETRY and tags] != []


def test_exhausted_timeouts_leave_the_callers_transaction_usable(
    make_counter: CounterFactory, dsn: str, caller: Conn
) -> None:
    caller.execute("CREATE TEMP TABLE work (n int)")
    caller.execute("INSERT INTO work VALUES (1)")
    with make_counter(dsn, statement_timeout_ms=40, max_retries=2) as counter:
        counter.increment(6)
        with row_lock_held(dsn, 6), pytest.raises(CounterTimeoutError):
            counter.increment(6, conn=caller)
        caller.execute("INSERT INTO work VALUES (2)")
        assert statement_timeout(caller) == "0"
        caller.commit()
        assert counter.current(6) == 1
    assert caller.execute("SELECT count(*) FROM work").fetchone() == (2,)


def test_a_fatal_error_is_not_retried_and_the_transaction_survives(
    counter: ProjectCounter, caller: Conn, metrics: RecordingMetrics
) -> None:
    counter.increment(7, delta=2**63 - 1)
    caller.execute("CREATE TEMP TABLE work (n int)")
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        counter.increment(7, conn=caller)
    caller.execute("INSERT INTO work VALUES (1)")
    caller.commit()
    assert RETRY not in metrics.incr_keys()
    assert counter.current(7) == 2**63 - 1


def test_serialization_failures_under_repeatable_read_go_back_to_the_caller(
    counter: ProjectCounter, caller: Conn, metrics: RecordingMetrics
) -> None:
    """Retrying inside one REPEATABLE READ snapshot would fail forever: surface at once."""
    counter.increment(8)
    caller.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    assert counter.current(8, conn=caller) == 1  # the snapshot is taken here
    counter.increment(8)  # someone else moves the counter after our snapshot
    with pytest.raises(psycopg.errors.SerializationFailure):
        counter.increment(8, conn=caller)
    assert RETRY not in metrics.incr_keys()
    caller.rollback()
    assert counter.increment(8, conn=caller) == 3  # the caller's retry, in a new transaction
    caller.commit()


def test_a_read_only_transaction_is_a_clear_error_without_retries(
    counter: ProjectCounter, caller: Conn, metrics: RecordingMetrics
) -> None:
    caller.read_only = True
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        counter.increment(9, conn=caller)
    assert caller.execute("SELECT 1").fetchone() == (1,)  # the savepoint was undone
    caller.rollback()
    assert RETRY not in metrics.incr_keys()
    assert counter.current(9) == 0


def test_the_row_lock_is_held_until_the_caller_commits(
    make_counter: CounterFactory, counter: ProjectCounter, caller: Conn, dsn: str
) -> None:
    """The trade-off of this mode, shown: every other increment of the project waits."""
    counter.increment(10, conn=caller)
    with make_counter(dsn, statement_timeout_ms=50, max_retries=1) as other:
        with pytest.raises(CounterTimeoutError):
            other.increment(10)
        caller.commit()
        assert other.increment(10) == 2


def test_a_failed_transaction_is_refused_up_front(counter: ProjectCounter, caller: Conn) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        caller.execute("SELECT 1/0")
    with pytest.raises(ValueError, match="failed transaction"):
        counter.increment(11, conn=caller)
    caller.rollback()
    assert counter.increment(11, conn=caller) == 1


def test_a_deadlock_goes_back_to_the_caller_at_once(
    counter: ProjectCounter, dsn: str, metrics: RecordingMetrics
) -> None:
    """Two transactions taking two projects in opposite orders: one of them must retry its
    whole transaction; retrying inside it would only meet the same cycle again."""
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        counter.increment(101, conn=a)
        counter.increment(102, conn=b)
        outcomes: dict[str, BaseException | int] = {}

        def take(name: str, conn: Conn, project: int) -> None:
            try:
                outcomes[name] = counter.increment(project, conn=conn)
            except BaseException as exc:
                outcomes[name] = exc
                conn.rollback()  # the deadlock victim gives up its locks, as a caller would

        threads = [
            threading.Thread(target=take, args=("a", a, 102)),
            threading.Thread(target=take, args=("b", b, 101)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        errors = [v for v in outcomes.values() if isinstance(v, BaseException)]
        assert len(errors) == 1
        assert isinstance(errors[0], psycopg.errors.DeadlockDetected)
        a.commit()
        b.commit()
    assert RETRY not in metrics.incr_keys()
    # the survivor's two numbers are committed, the victim's both rolled back
    assert counter.current(101) + counter.current(102) == 2
