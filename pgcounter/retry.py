"""When an increment is tried again, how long to wait, and what gets reported.

Sans-I/O on purpose: a client runs `Attempts` and only does the sleeping itself, so every
client (the sync one now, an async one later) shares the retry rules, metrics and logs.
Hand-written rather than stamina/tenacity: retrying is decided per attempt from the psycopg
error, the random source must be injectable for deterministic tests, the metrics carry
pgcounter's historical names, and the success path must allocate next to nothing.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import psycopg
import psycopg.errors

from pgcounter.errors import CounterNotInstalledError, CounterTimeoutError
from pgcounter.metrics import STATEMENT_TIMEOUT_EXHAUSTED, STATEMENT_TIMEOUT_RETRY, Metrics

logger = logging.getLogger("pgcounter")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how long to back off: exponential with full jitter.

    Retry n (1-based) sleeps a uniform random time in [0, min(max, base * 2**(n-1))] ms, so
    workers that timed out together do not come back together.
    """

    max_retries: int = 3
    backoff_base_ms: float = 50.0
    backoff_max_ms: float = 2000.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError("pgcounter: max_retries must be an int")
        if self.max_retries < 0:
            raise ValueError(f"pgcounter: max_retries must be >= 0, got {self.max_retries}")
        if not self.backoff_base_ms > 0:
            raise ValueError(f"pgcounter: backoff_base_ms must be > 0, got {self.backoff_base_ms}")
        if not self.backoff_max_ms >= self.backoff_base_ms:
            raise ValueError("pgcounter: backoff_max_ms must be >= backoff_base_ms")

    def backoff_ms(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.backoff_max_ms, self.backoff_base_ms * 2.0 ** (retry - 1))
        return rng.uniform(0.0, ceiling)


def is_statement_timeout(exc: BaseException) -> bool:
    """SQLSTATE 57014. (psycopg gives a user's cancel the same class; see the README.)"""
    return isinstance(exc, psycopg.errors.QueryCanceled)


def raise_if_not_installed(exc: psycopg.Error) -> None:
    """Turn 'function or schema does not exist' into a precise pgcounter error."""
    if isinstance(exc, psycopg.errors.UndefinedFunction | psycopg.errors.InvalidSchemaName):
        raise CounterNotInstalledError(
            "pgcounter: the database has no pgcounter functions; run `pgcounter migrate` on it"
        ) from exc


class Attempts:
    """The attempts of one increment call."""

    __slots__ = ("_metrics", "_policy", "_rng", "number", "project_id")

    def __init__(
        self, policy: RetryPolicy, project_id: int, metrics: Metrics, rng: random.Random
    ) -> None:
        self._policy = policy
        self._metrics = metrics
        self._rng = rng
        self.project_id = project_id
        self.number = 1

    def after_failure(self, exc: psycopg.Error) -> float | None:
        """Seconds to wait before the next attempt, or None: `exc` is not retried, re-raise it.

        Raises CounterTimeoutError (from `exc`) once the retries are used up.
        """
        raise_if_not_installed(exc)
        if not is_statement_timeout(exc):
            return None
        failed = self.number
        if failed > self._policy.max_retries:
            self._report(STATEMENT_TIMEOUT_EXHAUSTED, None)
            logger.error(
                "pgcounter: increment of project %d timed out on all %d attempts; giving up",
                self.project_id,
                failed,
                extra={"project_id": self.project_id, "attempt": failed},
            )
            raise CounterTimeoutError(self.project_id, failed) from exc
        sleep_ms = self._policy.backoff_ms(failed, self._rng)
        self._report(STATEMENT_TIMEOUT_RETRY, {"attempt": str(failed)})
        logger.warning(
            "pgcounter: increment of project %d hit the statement timeout on attempt %d; "
            "retrying in %.0f ms",
            self.project_id,
            failed,
            sleep_ms,
            extra={"project_id": self.project_id, "attempt": failed, "sleep_ms": sleep_ms},
        )
        self.number = failed + 1
        return sleep_ms / 1000.0

    def _report(self, key: str, tags: dict[str, str] | None) -> None:
        # A broken metrics backend must not turn a counter call into a failure.
        try:
            self._metrics.incr(key, 1, tags)
        except Exception:
            logger.exception("pgcounter: the metrics backend failed on %s", key)
