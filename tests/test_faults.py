"""Faults injected for real: backends terminated and cancelled, a server restarted.

Each test checks that no number was handed out twice and that the counter equals the sum of
the deltas of the calls that returned (plus, where a connection died, documented gaps).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgcounter import ProjectCounter, migrations
from pgcounter.metrics import RETRY, STATEMENT_TIMEOUT_RETRY
from tests.conftest import RecordingMetrics
from tests.helpers import row_lock_held
from tests.own_server import OwnServer, why_unavailable

CounterFactory = Callable[..., ProjectCounter]


@pytest.fixture(params=[True, False], ids=["pipeline", "one-query"])
def make_counter(request: pytest.FixtureRequest) -> CounterFactory:
    """Every test here runs with both ways of sending a call: the pipeline (the default) and
    one query string (`pipeline=False`, for PgBouncer)."""
    return functools.partial(ProjectCounter, pipeline=request.param)


def wait_for_blocked_backend(dsn: str, project_id: int, timeout: float = 5.0) -> int:
    """The pid of a backend waiting on a lock inside an increment (not the lock holder)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                """
                SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%%increment_project_counter%%'
                """
            ).fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.01)
    raise AssertionError(f"no backend blocked on project {project_id}")


def call_in_thread(fn: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_terminated_backend_is_recovered_on_a_new_connection(
    make_counter: CounterFactory, dsn: str, metrics: RecordingMetrics
) -> None:
    with make_counter(dsn, max_size=2, metrics=metrics, statement_timeout_ms=10_000) as counter:
        assert counter.increment(1) == 1
        with row_lock_held(dsn, 1) as holder:
            thread, outcome = call_in_thread(counter.increment, 1)
            pid = wait_for_blocked_backend(dsn, 1)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            time.sleep(0.1)  # the retry is now waiting for the lock again, on a new backend
            holder.commit()  # the holder's increment: 2
            thread.join(10)
        assert outcome == {"value": 3}
        assert counter.current(1) == 3
    reasons = [tags["reason"] for key, _, tags in metrics.incrs if key == RETRY and tags]
    assert reasons == ["connection"]
    assert STATEMENT_TIMEOUT_RETRY not in metrics.incr_keys()  # that one is for timeouts only


def test_all_idle_connections_dead_costs_one_retry_not_one_each(
    make_counter: CounterFactory, dsn: str, metrics: RecordingMetrics
) -> None:
    with make_counter(dsn, min_size=6, max_size=6, max_retries=2, metrics=metrics) as counter:
        counter.pool.wait()
        assert counter.increment(1) == 1
        with psycopg.connect(dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'pgcounter'"
            ).fetchone()
        assert killed == (6,)
        time.sleep(0.2)
        assert counter.increment(1) == 2
        assert counter.increment(1) == 3
    assert metrics.incr_keys().count(RETRY) == 1


def test_a_cancel_on_a_later_attempt_is_still_a_cancel(
    make_counter: CounterFactory, dsn: str, metrics: RecordingMetrics
) -> None:
    """Attempt 1 times out and is retried; attempt 2 is cancelled: surfaced, not retried."""
    with make_counter(
        dsn,
        statement_timeout_ms=300,
        lock_timeout_ms=5000,
        max_retries=5,
        backoff_base_ms=1,
        metrics=metrics,
    ) as counter:
        counter.increment(3)
        with row_lock_held(dsn, 3):
            thread, outcome = call_in_thread(counter.increment, 3)
            deadline = time.monotonic() + 5
            while RETRY not in metrics.incr_keys() and time.monotonic() < deadline:
                time.sleep(0.005)
            pid = wait_for_blocked_backend(dsn, 3)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
            thread.join(10)
        assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled)
        assert counter.current(3) == 1
    assert metrics.incr_keys().count(RETRY) == 1
    assert metrics.timings[-1][2] == {"outcome": "error", "attempts": "2"}


def test_in_the_callers_transaction_a_lost_connection_is_not_retried(
    make_counter: CounterFactory, dsn: str, metrics: RecordingMetrics
) -> None:
    with make_counter(dsn, metrics=metrics) as counter, psycopg.connect(dsn) as caller:
        counter.increment(4)
        with row_lock_held(dsn, 4):
            thread, outcome = call_in_thread(counter.increment, 4, conn=caller)
            pid = wait_for_blocked_backend(dsn, 4)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            thread.join(10)
        assert isinstance(outcome.get("error"), psycopg.OperationalError)
        assert caller.broken or caller.closed
        assert counter.current(4) == 1
    assert RETRY not in metrics.incr_keys()


def test_cancelled_increment_is_surfaced_not_retried(
    make_counter: CounterFactory, dsn: str, metrics: RecordingMetrics
) -> None:
    with make_counter(dsn, max_size=2, metrics=metrics) as counter:
        counter.increment(2)
        with row_lock_held(dsn, 2):
            thread, outcome = call_in_thread(counter.increment, 2)
            pid = wait_for_blocked_backend(dsn, 2)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
            thread.join(10)
        assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled)
        assert counter.current(2) == 1  # the holder rolled back; the cancelled call did nothing
        assert counter.increment(2) == 2
    assert RETRY not in metrics.incr_keys()
    assert metrics.timings[1][2] == {"outcome": "error", "attempts": "1"}


def test_read_only_default_is_a_clear_error_without_a_retry_storm(
    make_counter: CounterFactory, dsn: str, db: Any, metrics: RecordingMetrics
) -> None:
    db.execute(
        psycopg.sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
            psycopg.sql.Identifier(db.info.dbname)
        )
    )
    with make_counter(dsn, max_size=1, metrics=metrics) as counter:
        # an explicit BEGIN … READ COMMITTED does not make a transaction writable
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            counter.increment(1)
        assert counter.current(1) == 0
    assert metrics.incrs == []
    assert [tags for _, _, tags in metrics.timings] == [{"outcome": "error", "attempts": "1"}]


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = OwnServer()
    try:
        migrations.upgrade(server.dsn)
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_server_restart_while_eight_threads_increment(
    make_counter: CounterFactory, own_server: OwnServer
) -> None:
    metrics = RecordingMetrics()
    stop = threading.Event()
    returned: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    with make_counter(own_server.dsn, min_size=8, max_size=8, metrics=metrics) as counter:
        start = counter.current(1)  # the server is shared by this module's tests

        def worker() -> None:
            mine: list[int] = []
            try:
                while not stop.is_set():
                    mine.append(counter.increment(1))
            except BaseException as exc:
                failures.append(exc)
            with lock:
                returned.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        before = len(metrics.timings)
        own_server.restart()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        final = counter.current(1)

    assert failures == []
    assert before > 0
    assert len(returned) == len(set(returned)), "a number was handed out twice"
    connection_retries = sum(
        1
        for key, _, tags in metrics.incrs
        if key == RETRY and tags and tags["reason"] == "connection"
    )
    assert connection_retries >= 1  # the restart did hit calls in flight
    # Every returned number is real; the only numbers never returned are those whose commit
    # succeeded while its acknowledgement was lost, at most one per connection retry.
    assert min(returned) > start
    assert max(returned) <= final
    assert 0 <= final - start - len(returned) <= connection_retries
