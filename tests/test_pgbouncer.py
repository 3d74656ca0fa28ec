"""The client through a real PgBouncer in transaction pooling (tests/pgbouncer.py).

Clients of one PgBouncer share few server connections, and a server connection goes to the
next client at the end of every transaction: a session setting or a named prepared
statement left behind by one client is what the next one finds, and a message a client
sends after its transaction ended takes a server connection for it. These tests make the
clients share for real (a server pool of one or two connections), with the settings the
README gives for PgBouncer (`prepare_threshold=None, pipeline=False`), and check that
numbers stay unique, timeouts are retried, nothing of pgcounter's stays behind on the
server, and no server connection is held by an idle client.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypedDict

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors, pq
from psycopg_pool import ConnectionPool

from pgcounter import AsyncProjectCounter, CounterTimeoutError, ProjectCounter
from pgcounter.cli import Target, cli
from pgcounter.cli import counter as cli_counter
from pgcounter.doctor import diagnose
from pgcounter.metrics import RETRY, STATEMENT_TIMEOUT_RETRY
from tests.conftest import RecordingMetrics
from tests.helpers import release_after, row_lock_held, run_threads, skip_unless
from tests.pgbouncer import PgBouncer, why_unavailable

StartBouncer = Callable[..., PgBouncer]


class BouncerOptions(TypedDict):
    prepare_threshold: int | None
    pipeline: bool


# What the README tells a client behind PgBouncer in transaction pooling to pass.
BOUNCER_OPTIONS: Final[BouncerOptions] = {"prepare_threshold": None, "pipeline": False}

# What a server session looks like to a client: the settings pgcounter scopes to its calls,
# the placeholders it stashes a caller's timeouts in, and its server-side prepared statements.
SESSION = (
    "SELECT pg_backend_pid(), current_setting('statement_timeout'),"
    " current_setting('lock_timeout'),"
    " current_setting('pgcounter.caller_statement_timeout', true),"
    " current_setting('pgcounter.caller_lock_timeout', true),"
    " (SELECT count(*) FROM pg_prepared_statements)"
)


@pytest.fixture
def start_bouncer(dsn: str) -> Iterator[StartBouncer]:
    """Start PgBouncers in front of the test database; all are stopped after the test."""
    skip_unless("pgbouncer", why_unavailable())
    started: list[PgBouncer] = []

    def start(pool_size: int = 1) -> PgBouncer:
        started.append(PgBouncer(dsn, pool_size=pool_size))
        return started[-1]

    yield start
    for bouncer in started:
        print(bouncer.output())  # PgBouncer's log, shown when the test failed
        bouncer.stop()


@pytest.fixture
def bouncer_dsn(start_bouncer: StartBouncer) -> str:
    """The test database through PgBouncer with ONE server connection: every client shares."""
    return start_bouncer(pool_size=1).dsn


def session(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(SESSION).fetchone()
    assert row is not None
    return tuple(row)


def setting(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("coalesce", [True, False])
def test_threads_through_pgbouncer_never_duplicate(
    start_bouncer: StartBouncer, db: psycopg.Connection[Any], coalesce: bool
) -> None:
    """8 client connections over 2 server connections: each project gets 1, 2, 3, … once."""
    bouncer = start_bouncer(pool_size=2)
    threads, calls, projects = 8, 40, (11, 12)  # both projects' first insert races
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    with ProjectCounter(
        bouncer.dsn,
        min_size=threads,
        max_size=threads,
        **BOUNCER_OPTIONS,
        coalesce=coalesce,
    ) as counter:

        def work(worker: int) -> None:
            for n in range(calls):
                project = projects[(worker + n) % 2]
                value = counter.increment(project)
                with lock:
                    results.append((project, value))

        failures = run_threads(threads, work)
        assert counter.pool.get_stats()["pool_size"] == threads  # more clients than servers
    assert failures == []
    for project in projects:
        values = sorted(v for p, v in results if p == project)
        assert values == list(range(1, threads * calls // 2 + 1))
        row = db.execute("SELECT pgcounter.current_project_counter(%s)", (project,)).fetchone()
        assert row == (threads * calls // 2,)


@pytest.mark.asyncio
@pytest.mark.parametrize("coalesce", [True, False])
async def test_tasks_through_pgbouncer_never_duplicate(
    start_bouncer: StartBouncer, coalesce: bool
) -> None:
    bouncer = start_bouncer(pool_size=2)
    tasks, calls = 32, 15
    async with AsyncProjectCounter(
        bouncer.dsn,
        min_size=6,
        max_size=6,
        **BOUNCER_OPTIONS,
        coalesce=coalesce,
    ) as counter:

        async def work() -> list[int]:
            return [await counter.increment(21) for _ in range(calls)]

        results = await asyncio.gather(*(work() for _ in range(tasks)))
        final = await counter.current(21)
    assert sorted(v for mine in results for v in mine) == list(range(1, tasks * calls + 1))
    assert final == tasks * calls


@pytest.mark.parametrize(
    ("statement_timeout_ms", "lock_timeout_ms", "reason"),
    [(1000, 100, "lock_timeout"), (100, 5000, "statement_timeout")],
)
def test_a_timeout_through_pgbouncer_is_retried(
    dsn: str,
    bouncer_dsn: str,
    metrics: RecordingMetrics,
    statement_timeout_ms: int,
    lock_timeout_ms: int,
    reason: str,
) -> None:
    """Another session, directly on the server, holds the row: the attempts through PgBouncer
    time out (each on the timeout set by the statement before it in the same query string),
    are retried, and the number after the holder's comes back."""
    with ProjectCounter(
        bouncer_dsn,
        max_size=2,
        **BOUNCER_OPTIONS,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
        max_retries=30,
        backoff_base_ms=10,
        backoff_max_ms=40,
        metrics=metrics,
    ) as counter:
        assert counter.increment(31) == 1
        with row_lock_held(dsn, 31) as holder:  # the holder's uncommitted 2
            releaser = release_after(holder, 0.5, commit=True)
            assert counter.increment(31) == 3
            releaser.join()
        assert counter.increment(31) == 4
    retries = [tags for key, _, tags in metrics.incrs if key == STATEMENT_TIMEOUT_RETRY]
    assert len(retries) >= 2  # 0.5 s of lock against attempts of 100 ms
    assert retries == [{"attempt": str(n), "reason": reason} for n in range(1, len(retries) + 1)]
    assert [tags for key, _, tags in metrics.incrs if key == RETRY] == retries


def test_nothing_leaks_to_the_next_client_of_the_server_connection(
    dsn: str, bouncer_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """pgcounter's timeouts end with its transactions: the next client of the very same
    server session finds the server's defaults, after successes, after timed-out attempts,
    and after calls in a caller's transaction (`conn=`)."""
    clean = (setting(db, "statement_timeout"), setting(db, "lock_timeout"), None, None, 0)
    with (
        psycopg.connect(bouncer_dsn, autocommit=True, prepare_threshold=None) as other,
        ProjectCounter(
            bouncer_dsn,
            min_size=1,
            max_size=1,
            **BOUNCER_OPTIONS,
            statement_timeout_ms=150,
            lock_timeout_ms=100,
            max_retries=1,
            backoff_base_ms=1,
            backoff_max_ms=5,
        ) as counter,
    ):
        pid, *before = session(other)
        assert tuple(before) == clean
        with counter.pool.connection() as mine:
            assert session(mine)[0] == pid  # pgcounter's connection is on the same session

        def seen_by_the_other_client() -> tuple[Any, ...]:
            now_pid, *rest = session(other)
            assert now_pid == pid  # still the one shared server session
            # A placeholder, once set, stays defined but empty: no caller's value in it.
            return (rest[0], rest[1], rest[2] or None, rest[3] or None, rest[4])

        assert [counter.increment(41) for _ in range(12)] == list(range(1, 13))
        assert seen_by_the_other_client() == clean

        with row_lock_held(dsn, 41), pytest.raises(CounterTimeoutError):
            counter.increment(41)  # two timed-out attempts
        assert seen_by_the_other_client() == clean

        with psycopg.connect(bouncer_dsn, prepare_threshold=None) as caller:
            caller.execute("SET LOCAL statement_timeout = '7s'")
            caller.execute("SET LOCAL lock_timeout = '6s'")
            assert counter.increment(41, conn=caller) == 13
            assert session(caller)[1:3] == ("7s", "6s")  # the caller's own, restored
            caller.commit()
            assert seen_by_the_other_client() == clean

            caller.execute("SET LOCAL statement_timeout = '7s'")
            with row_lock_held(dsn, 41), pytest.raises(CounterTimeoutError):
                counter.increment(41, conn=caller)  # timed out in its savepoints
            assert setting(caller, "statement_timeout") == "7s"
            caller.rollback()
            assert seen_by_the_other_client() == clean

            for expected in range(14, 26):  # many caller transactions, nothing prepared
                assert counter.increment(41, conn=caller) == expected
                caller.commit()
        assert seen_by_the_other_client() == clean


def test_the_doctor_leaves_nothing_on_a_shared_server_connection(
    bouncer_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """The doctor's own timeouts are transaction-local: a client that gets the same server
    session next sees the server's defaults, and nothing was prepared."""
    clean = (setting(db, "statement_timeout"), setting(db, "lock_timeout"), None, None, 0)
    with psycopg.connect(bouncer_dsn, autocommit=True, prepare_threshold=None) as other:
        pid, *before = session(other)
        assert tuple(before) == clean
        report = diagnose(bouncer_dsn)
        assert report.status == "ok", report.text()
        now_pid, *after = session(other)
        assert (now_pid, tuple(after)) == (pid, clean)


def test_no_server_connection_is_kept_by_an_idle_client(bouncer_dsn: str) -> None:
    """One thread calling, three client connections taken in turn, one server connection:
    each call must hand the server back with its transaction. A message sent after the Sync
    (the Flush of psycopg's pipeline) reaches PgBouncer after the server's ReadyForQuery
    when the sending thread loses the GIL in between; PgBouncer then gives the server to
    that client, which sits idle in the pool, and the next call waits for the server until
    PgBouncer's query_wait_timeout disconnects it. A busy thread and a short switch
    interval make that happen within a few hundred pipelined calls."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(1000))

    interval = sys.getswitchinterval()
    spinner = threading.Thread(target=busy, daemon=True)
    with ProjectCounter(bouncer_dsn, min_size=3, max_size=3, **BOUNCER_OPTIONS) as counter:
        sys.setswitchinterval(0.0001)
        spinner.start()
        try:
            values = [counter.increment(71) for _ in range(600)]
        finally:
            stop.set()
            spinner.join()
            sys.setswitchinterval(interval)
    assert values == list(range(1, 601))


def _messages_sent(dsn: str, tmp_path: Path, *, pipeline: bool) -> list[str]:
    """The frontend messages of 20 increments, from libpq's trace of the wire."""
    trace = tmp_path / f"libpq-{pipeline}.trace"
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        counter = ProjectCounter.from_pool(pool, pipeline=pipeline)
        counter.increment(1)
        with trace.open("w") as out:
            with pool.connection() as conn:
                conn.pgconn.trace(out.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            for _ in range(20):
                counter.increment(1)
            with pool.connection() as conn:
                conn.pgconn.untrace()
    lines = trace.read_text().splitlines()
    return [line.split("\t")[2].split(" ")[0] for line in lines if line.startswith("F\t")]


def test_without_pipeline_a_call_is_one_query_message(dsn: str, tmp_path: Path) -> None:
    """pipeline=False: one Query message per call and nothing else (no Parse, no Flush);
    the pipeline, for comparison, sends Flush after its Sync: what PgBouncer 1.18 in
    transaction mode can take as a new transaction of an idle client."""
    assert _messages_sent(dsn, tmp_path, pipeline=False) == ["Query"] * 20
    pipelined = _messages_sent(dsn, tmp_path, pipeline=True)
    assert pipelined.count("Sync") == 20
    assert "Flush" in pipelined


def test_psycopgs_default_prepare_threshold_breaks_under_transaction_pooling(
    start_bouncer: StartBouncer,
) -> None:
    """Why prepare_threshold=None. With psycopg's default (5) each client connection
    prepares a statement under psycopg's names (_pg3_0, …) once it ran it 5 times; the
    server session it lands on already has that name from another client (42P05), or has
    not got it (26000). Sequential calls from one thread; the pool hands its 3 connections
    out in turn, so the first 15 calls prepare nothing."""
    bouncer = start_bouncer(pool_size=2)
    values: list[int] = []
    with ProjectCounter(bouncer.dsn, min_size=3, max_size=3, coalesce=False) as counter:

        def call_36_times() -> None:
            for _ in range(36):
                values.append(counter.increment(51))

        with pytest.raises((errors.DuplicatePreparedStatement, errors.InvalidSqlStatementName)):
            call_36_times()
    assert len(values) >= 15
    assert values == list(range(1, len(values) + 1))

    # pipeline=False never prepares a call, but current() is a plain statement: prepared too.
    with ProjectCounter(bouncer.dsn, min_size=3, max_size=3, pipeline=False) as counter:

        def read_36_times() -> None:
            for _ in range(36):
                counter.current(51)

        with pytest.raises((errors.DuplicatePreparedStatement, errors.InvalidSqlStatementName)):
            read_36_times()


@pytest.mark.parametrize("pool_size", [1, 2])
def test_prepare_threshold_none_works_under_transaction_pooling(
    start_bouncer: StartBouncer, pool_size: int
) -> None:
    """The same with prepare_threshold=None: well past the threshold on every client
    connection, every kind of call, and nothing was ever prepared on the server."""
    bouncer = start_bouncer(pool_size=pool_size)
    with ProjectCounter(
        bouncer.dsn,
        min_size=3,
        max_size=3,
        coalesce=False,
        **BOUNCER_OPTIONS,
    ) as counter:
        assert [counter.increment(51) for _ in range(36)] == list(range(1, 37))
        assert [counter.current(51) for _ in range(36)] == [36] * 36
        for _ in range(12):
            counter.increment_many({52: 2, 53: 3})
        assert counter.ensure_at_least(52, 100) == 100
        assert counter.increment_many({52: 1, 53: 1}) == {52: 101, 53: 37}
        with counter.pool.connection() as conn:
            assert conn.prepare_threshold is None
            assert session(conn)[-1] == 0


@pytest.mark.asyncio
async def test_async_prepare_threshold_none_works_under_transaction_pooling(
    bouncer_dsn: str,
) -> None:
    async with AsyncProjectCounter(
        bouncer_dsn,
        min_size=3,
        max_size=3,
        coalesce=False,
        **BOUNCER_OPTIONS,
    ) as counter:
        assert [await counter.increment(61) for _ in range(36)] == list(range(1, 37))
        assert [await counter.current(61) for _ in range(12)] == [36] * 12
        async with counter.pool.connection() as conn:
            assert conn.prepare_threshold is None
            cursor = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            assert await cursor.fetchone() == (0,)


def test_prepare_threshold_reaches_the_pools_connections(dsn: str) -> None:
    with ProjectCounter(dsn, prepare_threshold=0) as counter, counter.pool.connection() as conn:
        assert conn.prepare_threshold == 0
    with ProjectCounter(dsn) as counter, counter.pool.connection() as conn:
        assert conn.prepare_threshold == 5  # psycopg's default, unchanged


@pytest.mark.parametrize(
    ("threshold", "error"), [(-1, ValueError), (True, TypeError), ("5", TypeError)]
)
def test_a_bad_prepare_threshold_fails_before_any_io(threshold: Any, error: type) -> None:
    unreachable = "host=127.0.0.1 port=1 dbname=nothing connect_timeout=1"
    with pytest.raises(error, match="prepare_threshold"):
        ProjectCounter(unreachable, prepare_threshold=threshold)
    with pytest.raises(error, match="prepare_threshold"):
        AsyncProjectCounter(unreachable, prepare_threshold=threshold)


def test_the_cli_through_pgbouncer(bouncer_dsn: str, dsn: str) -> None:
    """--pgbouncer (or PGCOUNTER_PGBOUNCER=1) gives the CLI's client both settings."""
    runner = CliRunner()
    taken = [
        runner.invoke(cli, ["--dsn", bouncer_dsn, "--pgbouncer", "increment", "9"]).stdout
        for _ in range(3)
    ]
    assert taken == ["1\n", "2\n", "3\n"]
    env = {"PGCOUNTER_PGBOUNCER": "1"}
    result = runner.invoke(cli, ["--dsn", bouncer_dsn, "get", "9"], env=env)
    assert (result.exit_code, result.stdout) == (0, "3\n")
    with cli_counter(Target(dsn, pgbouncer=True)) as c, c.pool.connection() as conn:
        assert conn.prepare_threshold is None
    with cli_counter(Target(dsn)) as c, c.pool.connection() as conn:
        assert conn.prepare_threshold == 5
