"""Client CPU per increment, for docs/benchmarks.md: where a Python client's time goes.

Run against a scratch database that pgcounter was migrated into:
    PGCOUNTER_DSN=postgresql://postgres@127.0.0.1/pgcounter_bench python docs/client_cpu.py
It uses one project id of the bench range and removes the range afterwards.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool

import pgcounter
from pgcounter.bundle import read_sql

DSN = os.environ["PGCOUNTER_DSN"]
PROJECT = 9_100_000_000_000_000_005
CALL = "SELECT pgcounter.increment_project_counter(%s, %s)"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, fn: Callable[[], object], n: int = 3000) -> None:
    for _ in range(300):
        fn()
    cpu0, wall0 = cpu_s(), time.perf_counter()
    for _ in range(n):
        fn()
    wall = (time.perf_counter() - wall0) / n * 1e6
    cpu = (cpu_s() - cpu0) / n * 1e6
    print(f"{name:<38} wall {wall:4.0f} us/op, client CPU {cpu:4.0f} us/op")


def main() -> None:
    conn = psycopg.connect(DSN, autocommit=True)

    def bare() -> object:
        return conn.execute(CALL, (PROJECT, 1)).fetchone()

    def pipeline_of_four() -> object:
        with conn.pipeline():
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            conn.execute(
                "SELECT set_config('statement_timeout', %s, true),"
                " set_config('lock_timeout', %s, true)",
                ("3000", "2500"),
            )
            cursor = conn.execute(CALL, (PROJECT, 1))
            conn.execute("COMMIT", prepare=False)
        return cursor.fetchone()

    pool = ConnectionPool(DSN, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True)

    def pooled() -> object:
        with pool.connection() as pooled_conn:
            return pooled_conn.execute(CALL, (PROJECT, 1)).fetchone()

    counter = pgcounter.ProjectCounter(DSN, coalesce=False, max_size=1)
    measure("psycopg, one bare statement", bare)
    measure("psycopg, pool checkout + statement", pooled)
    measure("psycopg, the four-statement pipeline", pipeline_of_four)
    measure("pgcounter plain", lambda: counter.increment(PROJECT))
    counter.close()
    pool.close()
    conn.execute(read_sql("bench/cleanup.sql"))


if __name__ == "__main__":
    main()
