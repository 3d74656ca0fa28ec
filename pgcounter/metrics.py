"""The metrics interface pgcounter reports to, and the names it reports.

Any object with `incr` and `timing` of these signatures works: a statsd/DogStatsD client, a
thin wrapper over Prometheus or OpenTelemetry, or a test recorder. The names are those of
the fix pgcounter replaces, so existing dashboards and alerts keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

PREFIX = "counter.increment_project_counter_in_database"

DURATION = PREFIX
"""Timing (ms) of every increment call, retries included; tags `outcome` (ok,
timeout_exhausted, error) and `attempts`."""
STATEMENT_TIMEOUT_RETRY = f"{PREFIX}.statement_timeout_retry"
"""Counted on every retry after a timeout (statement or lock); tags `attempt` (the attempt
that failed: 1, 2, …) and `reason` (statement_timeout, lock_timeout)."""
STATEMENT_TIMEOUT_EXHAUSTED = f"{PREFIX}.statement_timeout_exhausted"
"""Counted when an increment gave up on timeouts: retries or deadline used up."""
RETRY = f"{PREFIX}.retry"
"""Counted on every retry, whatever the reason; tags `attempt` and `reason` (statement_timeout,
lock_timeout, deadlock, serialization, connection)."""

Tags = Mapping[str, str]


class Metrics(Protocol):
    """What pgcounter needs of a metrics backend."""

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None: ...

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None: ...


class NoMetrics:
    """The default backend: records nothing."""

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None:
        return None

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None:
        return None
