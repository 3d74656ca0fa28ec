"""Sequential increments with each way of sending a call, for docs/benchmarks.md.

The pipeline (the default) against one query string (`pipeline=False`, what PgBouncer in
transaction pooling needs), on the same database in one run: rounds alternate the two
modes, and the medians and their ratio are printed. Run against a database pgcounter was
migrated into (direct, or a PgBouncer in front of it):
    PGCOUNTER_DSN=postgresql://postgres@127.0.0.1/pgcounter_bench python docs/sending_modes.py
It uses one project id of the bench range and removes it afterwards.
"""

from __future__ import annotations

import os
import statistics
import time

import psycopg

from pgcounter import ProjectCounter

DSN = os.environ["PGCOUNTER_DSN"]
PROJECT = 9_100_000_000_000_000_006
ROUNDS = int(os.environ.get("ROUNDS", "7"))
CALLS = int(os.environ.get("CALLS", "2000"))
# The pipeline's client as users get it by default (prepared after 5 runs); through
# PgBouncer set PIPELINE_PREPARE=none, since prepared statements break there anyway.
_prepare = os.environ.get("PIPELINE_PREPARE", "5")
PIPELINE_PREPARE = None if _prepare == "none" else int(_prepare)


def rate(counter: ProjectCounter) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        counter.increment(PROJECT)
    return CALLS / (time.perf_counter() - started)


def main() -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    with (
        ProjectCounter(
            DSN, max_size=1, pipeline=True, prepare_threshold=PIPELINE_PREPARE
        ) as pipelined,
        ProjectCounter(DSN, max_size=1, pipeline=False, prepare_threshold=None) as one_query,
    ):
        clients = {True: pipelined, False: one_query}
        for client in clients.values():
            for _ in range(300):  # warm up: connections, plans, caches
                client.increment(PROJECT)
        for round_ in range(ROUNDS):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for pipeline in order:
                rates[pipeline].append(rate(clients[pipeline]))
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DELETE FROM pgcounter.project_counter WHERE project_id = %s", (PROJECT,))
    pipe, one = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"{ROUNDS} rounds of {CALLS} sequential increments, medians:")
    print(f"  pipeline          {pipe:7.0f} calls/s   {1e6 / pipe:5.0f} us/call")
    print(f"  one query string  {one:7.0f} calls/s   {1e6 / one:5.0f} us/call")
    print(f"  one query string / pipeline: {one / pipe:.2f}x")


if __name__ == "__main__":
    main()
