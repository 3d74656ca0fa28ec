"""increment_many (one round trip for many projects) and coalescing (one call for many
concurrent callers of one project)."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from typing import Any

import psycopg
import pytest

from pgcounter import CounterTimeoutError, ProjectCounter
from tests.conftest import RecordingMetrics
from tests.helpers import row_lock_held, run_threads


class TestIncrementMany:
    def test_one_call_for_many_projects(self, counter: ProjectCounter) -> None:
        counter.increment(2, delta=10)
        assert counter.increment_many({3: 1, 1: 5, 2: 2}) == {1: 5, 2: 12, 3: 1}
        assert counter.increment_many({1: 1}) == {1: 6}
        assert [counter.current(p) for p in (1, 2, 3)] == [6, 12, 1]

    def test_empty_batch_needs_no_database(self, dsn: str) -> None:
        counter = ProjectCounter(dsn, max_size=1)
        counter.close()  # any I/O would now fail
        assert counter.increment_many({}) == {}

    @pytest.mark.parametrize(
        ("batch", "error"),
        [
            ([(1, 1)], TypeError),
            ({1: 0}, ValueError),
            ({1: 1, 2: -1}, ValueError),
            ({"1": 1}, TypeError),
            ({2**63: 1}, ValueError),
        ],
    )
    def test_bad_batch_fails_before_any_io(self, dsn: str, batch: Any, error: type) -> None:
        counter = ProjectCounter(dsn, max_size=1)
        counter.close()
        with pytest.raises(error):
            counter.increment_many(batch)

    def test_all_or_nothing_on_overflow(self, counter: ProjectCounter) -> None:
        counter.increment(9, delta=2**63 - 1)
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            counter.increment_many({1: 1, 9: 1})
        assert counter.current(1) == 0

    def test_in_the_callers_transaction(self, counter: ProjectCounter, dsn: str) -> None:
        with psycopg.connect(dsn) as caller:
            assert counter.increment_many({1: 2, 2: 3}, conn=caller) == {1: 2, 2: 3}
            caller.rollback()
        assert counter.current(1) == 0

    def test_batches_in_any_order_never_deadlock(self, dsn: str) -> None:
        """Concurrent batches over the same projects, handed to the SQL function in opposite
        orders (and through the client): the function locks in project_id order."""
        projects = list(range(1, 21))
        rounds = 40

        def sql_worker(i: int) -> None:
            order = projects if i % 2 else projects[::-1]
            with psycopg.connect(dsn, autocommit=True) as conn:
                for _ in range(rounds):
                    conn.execute(
                        "SELECT * FROM pgcounter.increment_project_counters(%s, %s)",
                        (order, [1] * len(order)),
                    )

        def client_worker(i: int) -> None:
            rng = random.Random(i)
            with ProjectCounter(dsn, max_size=1, max_retries=0) as counter:
                for _ in range(rounds):
                    batch = {p: 1 for p in rng.sample(projects, len(projects))}
                    counter.increment_many(batch)

        errors = run_threads(8, lambda i: sql_worker(i) if i < 4 else client_worker(i))
        assert errors == []
        with ProjectCounter(dsn, max_size=1) as counter:
            assert {counter.current(p) for p in projects} == {8 * rounds}


class TestCoalescing:
    def test_concurrent_callers_share_calls_and_get_their_own_numbers(
        self, dsn: str, metrics: RecordingMetrics
    ) -> None:
        threads, calls = 16, 100
        handed_out: dict[int, list[int]] = defaultdict(list)
        lock = threading.Lock()
        with ProjectCounter(dsn, max_size=4, metrics=metrics) as counter:

            def worker(i: int) -> None:
                rng = random.Random(i)
                mine: list[int] = []
                for _ in range(calls):
                    delta = rng.choice((1, 1, 2, 3))
                    value = counter.increment(7, delta)
                    mine.extend(range(value - delta + 1, value + 1))
                with lock:
                    handed_out[7].extend(mine)

            assert run_threads(threads, worker) == []
            final = counter.current(7)
        numbers = handed_out[7]
        assert sorted(numbers) == list(range(1, final + 1))  # no duplicate, no gap
        database_calls = len(metrics.timings)  # one timing per round
        assert database_calls < threads * calls  # callers did share rounds
        assert all(tags == {"outcome": "ok", "attempts": "1"} for _, _, tags in metrics.timings)

    def test_without_coalescing_every_call_is_its_own(
        self, dsn: str, metrics: RecordingMetrics
    ) -> None:
        with ProjectCounter(dsn, max_size=4, metrics=metrics, coalesce=False) as counter:
            assert run_threads(8, lambda i: [counter.increment(1) for _ in range(25)]) == []
            assert counter.current(1) == 200
        assert len(metrics.timings) == 200

    def test_a_lone_caller_leads_its_own_round(self, counter: ProjectCounter, metrics: Any) -> None:
        assert [counter.increment(3) for _ in range(5)] == [1, 2, 3, 4, 5]
        assert len(metrics.timings) == 5

    def test_a_failed_round_fails_every_caller_in_it_and_changes_nothing(
        self, dsn: str, metrics: RecordingMetrics
    ) -> None:
        with ProjectCounter(
            dsn, statement_timeout_ms=200, max_retries=0, metrics=metrics, max_size=4
        ) as counter:
            counter.increment(5)
            outcomes: list[BaseException | int] = []

            def worker(i: int) -> None:
                try:
                    outcomes.append(counter.increment(5))
                except CounterTimeoutError as exc:
                    outcomes.append(exc)

            with row_lock_held(dsn, 5):
                assert run_threads(6, worker) == []
            assert len(outcomes) == 6
            assert all(isinstance(o, CounterTimeoutError) for o in outcomes)
            assert counter.current(5) == 1
            assert counter.increment(5) == 2  # and the project is not stuck in flight
        assert len(metrics.timings) < 1 + 6 + 1  # the six shared rounds


class TestBatchingAcrossProjects:
    def test_callers_of_many_projects_share_calls(
        self, dsn: str, metrics: RecordingMetrics
    ) -> None:
        threads, calls, projects = 16, 60, 40
        handed_out: dict[int, list[int]] = defaultdict(list)
        lock = threading.Lock()
        with ProjectCounter(dsn, max_size=4, metrics=metrics, batch_projects=True) as counter:

            def worker(i: int) -> None:
                rng = random.Random(i)
                mine: list[tuple[int, range]] = []
                for _ in range(calls):
                    project, delta = rng.randrange(projects), rng.choice((1, 2))
                    value = counter.increment(project, delta)
                    mine.append((project, range(value - delta + 1, value + 1)))
                with lock:
                    for project, numbers in mine:
                        handed_out[project].extend(numbers)

            assert run_threads(threads, worker) == []
            finals = {p: counter.current(p) for p in handed_out}
        for project, numbers in handed_out.items():
            assert sorted(numbers) == list(range(1, finals[project] + 1)), project
        batched = [t for _, _, t in metrics.timings]
        assert len(batched) < threads * calls  # calls were shared across projects

    def test_a_batch_failure_fails_its_callers_and_changes_nothing(self, dsn: str) -> None:
        """Project 1's row is locked: its callers time out, and so does anyone batched with
        them; every call that failed took nothing, every call that succeeded got its own."""
        with ProjectCounter(
            dsn, batch_projects=True, statement_timeout_ms=200, max_retries=0, max_size=4
        ) as counter:
            counter.increment(1)
            outcomes: list[tuple[int, BaseException | int]] = []
            with row_lock_held(dsn, 1):

                def worker(i: int) -> None:
                    project = 1 + i % 3
                    try:
                        outcomes.append((project, counter.increment(project)))
                    except CounterTimeoutError as exc:
                        outcomes.append((project, exc))

                assert run_threads(6, worker) == []
            assert all(isinstance(o, CounterTimeoutError) for p, o in outcomes if p == 1)
            for project in (1, 2, 3):
                got = sorted(o for p, o in outcomes if p == project and isinstance(o, int))
                expected_start = 2 if project == 1 else 1
                assert got == list(range(expected_start, expected_start + len(got)))
                assert counter.current(project) == expected_start - 1 + len(got)


def test_a_queued_caller_keeps_its_own_deadline(dsn: str) -> None:
    """Two rounds blocked on a locked row fill both slots; a third caller queues. Its call
    ends by its own deadline, not after the rounds ahead of it plus a deadline of its own."""
    with ProjectCounter(
        dsn, statement_timeout_ms=5000, lock_timeout_ms=5000, deadline_ms=600, max_size=4
    ) as counter:
        counter.increment(1)
        with row_lock_held(dsn, 1):
            durations: list[float] = []
            outcomes: list[BaseException | int] = []

            def worker(i: int) -> None:
                time.sleep(0.1 * (i // 2))  # two leaders first, then the queued one
                started = time.monotonic()
                try:
                    outcomes.append(counter.increment(1))
                except CounterTimeoutError as exc:
                    outcomes.append(exc)
                durations.append(time.monotonic() - started)

            assert run_threads(3, worker) == []
        assert all(isinstance(o, CounterTimeoutError) for o in outcomes)
        assert max(durations) < 1.0  # every caller within about its 600 ms deadline
        assert counter.current(1) == 1
