"""One `pgcounter bench` invocation: set up, run every contender on every workload, clean up."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg

from pgcounter.bench.contenders import ForUpdate, Original, PgcounterMode
from pgcounter.bench.runner import Progress, Result, find_pgbench, run, run_pgbench
from pgcounter.bench.workload import Workload
from pgcounter.bundle import read_sql

BASE_PROJECT_ID = 9_000_000_000_000_000_000  # far above real ids; see sql/bench/cleanup.sql
RUN_STRIDE = 1_000_000_000


@dataclass(frozen=True)
class Plan:
    workers: Sequence[int]
    projects: int
    distribution: str
    duration_s: float
    modes: Sequence[str]
    alternatives: Sequence[str]
    use_async: bool


@contextlib.contextmanager
def bench_schema(dsn: str, needed: bool) -> Iterator[None]:
    """The alternatives' tables for the run, and no bench leftovers afterwards."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(read_sql("bench/cleanup.sql"))
        if needed:
            conn.execute(read_sql("bench/baseline.sql"))
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(read_sql("bench/cleanup.sql"))


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def execute(
    dsn: str,
    plan: Plan,
    progress_for: Callable[[str], contextlib.AbstractContextManager[Progress]],
) -> list[Result]:
    results: list[Result] = []
    pgbench = find_pgbench() if "pgbench" in plan.alternatives else None
    with bench_schema(dsn, needed=bool({"original", "for_update"} & set(plan.alternatives))):
        run_index = 0
        for sweep, workers in enumerate(plan.workers):
            workload = Workload(
                workers, plan.projects, plan.distribution, plan.duration_s, plan.use_async
            )
            sync_workload = Workload(workers, plan.projects, plan.distribution, plan.duration_s)
            names = [*plan.modes, *plan.alternatives]
            # Alternate the order between worker counts: no contender always runs first.
            for name in names if sweep % 2 == 0 else names[::-1]:
                run_index += 1
                base = BASE_PROJECT_ID + run_index * RUN_STRIDE
                with progress_for(f"{name:<10} x {workers:>3}") as progress:
                    if name == "pgbench":
                        if pgbench is None:
                            continue
                        results.append(run_pgbench(pgbench, dsn, sync_workload, base, progress))
                    elif name == "original":
                        results.append(run(Original(dsn, workers), sync_workload, base, progress))
                    elif name == "for_update":
                        results.append(run(ForUpdate(dsn, workers), sync_workload, base, progress))
                    else:
                        mode_workload = sync_workload if name == "blocks" else workload
                        contender = PgcounterMode(dsn, workers, name)
                        results.append(run(contender, mode_workload, base, progress))
    return results
