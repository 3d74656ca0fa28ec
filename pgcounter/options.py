"""What both clients are configured with, built and checked in one place."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, TypedDict

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from pgcounter.metrics import Metrics
from pgcounter.retry import Attempts, RetryPolicy, Timeouts
from pgcounter.validation import check_prepare_threshold

PREPARE_THRESHOLD = 5
"""psycopg's own default: a statement is prepared server-side once it was run this often."""


class CounterOptions(TypedDict, total=False):
    """What every client accepts besides its connection source. Defaults in the README."""

    coalesce: bool
    batch_projects: bool
    pipeline: bool
    statement_timeout_ms: int
    lock_timeout_ms: int | None
    max_retries: int
    backoff_base_ms: float
    backoff_max_ms: float
    deadline_ms: float
    metrics: Metrics | None
    rng: random.Random | None


@dataclass(frozen=True, slots=True)
class Settings:
    timeouts: Timeouts
    policy: RetryPolicy
    metrics: Metrics | None
    rng: random.Random
    coalesce: bool
    batch_projects: bool
    pipeline: bool
    """True: a call's statements go out in one libpq pipeline (extended protocol, prepared
    once used often). False: as one simple-protocol query string (`calls.one_query`), for
    a transaction pooler in front of the server. One round trip either way."""

    @classmethod
    def build(
        cls,
        *,
        coalesce: bool = True,
        batch_projects: bool = False,
        pipeline: bool = True,
        statement_timeout_ms: int = 3000,
        lock_timeout_ms: int | None = None,
        max_retries: int = 3,
        backoff_base_ms: float = 50.0,
        backoff_max_ms: float = 1000.0,
        deadline_ms: float = 10_000.0,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> Settings:
        if lock_timeout_ms is None and isinstance(statement_timeout_ms, int):
            # Somewhat below the statement timeout: a lock wait ends as 55P03 first.
            lock_timeout_ms = max(1, statement_timeout_ms * 5 // 6)
        return cls(
            timeouts=Timeouts(statement_timeout_ms, lock_timeout_ms),
            policy=RetryPolicy(max_retries, backoff_base_ms, backoff_max_ms, deadline_ms),
            metrics=metrics,
            rng=rng if rng is not None else random.Random(),  # noqa: S311 (jitter, not crypto)
            coalesce=bool(coalesce),
            batch_projects=bool(batch_projects),
            pipeline=bool(pipeline),
        )

    def attempts(
        self, project_ids: tuple[int, ...], *, autonomous: bool, started: float | None = None
    ) -> Attempts:
        return Attempts(
            self.policy,
            self.timeouts,
            project_ids,
            self.metrics,
            self.rng,
            autonomous=autonomous,
            started=started,
        )


def pool_kwargs(dsn: str, *, prepare_threshold: int | None = PREPARE_THRESHOLD) -> dict[str, Any]:
    """Connection settings of a pool the client owns.

    `prepare_threshold=None` turns psycopg's named prepared statements off, for poolers that
    hand each transaction to any server connection without tracking prepared statements
    (PgBouncer's transaction mode before 1.21): a statement prepared on one server
    connection is missing from the next, or already there under the same name from
    another client.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": check_prepare_threshold(prepare_threshold),
    }
    if not conninfo_to_dict(dsn).get("application_name"):
        kwargs["application_name"] = "pgcounter"  # so pg_stat_activity shows whose it is
    return kwargs


def check_caller_connection(autocommit: bool, status: pq.TransactionStatus) -> None:
    """`conn=` must be a connection inside a usable transaction."""
    if autocommit and status == pq.TransactionStatus.IDLE:
        raise ValueError(
            "pgcounter: conn= must be inside a transaction; an autocommit connection needs "
            "`with conn.transaction():` around the call"
        )
    if status == pq.TransactionStatus.INERROR:
        raise ValueError("pgcounter: conn= is in a failed transaction; roll it back first")
