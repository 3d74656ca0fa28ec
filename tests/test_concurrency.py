"""Many threads, few projects, first inserts racing: no duplicates, no lost increments."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

from pgcounter import ProjectCounter

THREADS = 16
CALLS_PER_THREAD = 200
PROJECTS = (101, 102, 103, 104)


def test_no_duplicates_and_no_lost_increments(dsn: str) -> None:
    handed_out: dict[int, list[int]] = defaultdict(list)
    lock = threading.Lock()
    failures: list[BaseException] = []
    calls = deltas = 0
    start = threading.Barrier(THREADS)

    with ProjectCounter(dsn, min_size=THREADS, max_size=THREADS) as counter:

        def worker(seed: int) -> None:
            nonlocal calls, deltas
            rng = random.Random(seed)
            mine: list[tuple[int, range]] = []
            try:
                start.wait()
                # Every thread's first call is on the same, not yet existing, project: the
                # very first insert races.
                for n in range(CALLS_PER_THREAD):
                    project = PROJECTS[0] if n == 0 else rng.choice(PROJECTS)
                    delta = rng.choice((1, 1, 1, 2, 5))
                    value = counter.increment(project, delta)
                    mine.append((project, range(value - delta + 1, value + 1)))
            except BaseException as exc:
                failures.append(exc)
            with lock:
                for project, numbers in mine:
                    handed_out[project].extend(numbers)
                    calls += 1
                    deltas += len(numbers)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert failures == []
        assert calls == THREADS * CALLS_PER_THREAD
        finals = 0
        for project in PROJECTS:
            numbers = handed_out[project]
            final = counter.current(project)
            assert len(numbers) == len(set(numbers)), f"duplicates in project {project}"
            assert sorted(numbers) == list(range(1, final + 1)), f"gap or loss in {project}"
            finals += final
        assert finals == deltas  # every successful call's delta counted once, no more
