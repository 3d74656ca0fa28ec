"""pgcounter: per-project counters in PostgreSQL, never the same number twice."""

from pgcounter.aio import AsyncProjectCounter
from pgcounter.blocks import BlockCounter
from pgcounter.client import ProjectCounter
from pgcounter.errors import (
    ConfigurationError,
    CounterError,
    CounterNotInstalledError,
    CounterTimeoutError,
)
from pgcounter.metrics import Metrics, NoMetrics
from pgcounter.options import CounterOptions
from pgcounter.retry import Failure, RetryPolicy, Timeouts

__all__ = [
    "AsyncProjectCounter",
    "BlockCounter",
    "ConfigurationError",
    "CounterError",
    "CounterNotInstalledError",
    "CounterOptions",
    "CounterTimeoutError",
    "Failure",
    "Metrics",
    "NoMetrics",
    "ProjectCounter",
    "RetryPolicy",
    "Timeouts",
]
