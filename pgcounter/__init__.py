"""pgcounter: per-project counters in PostgreSQL, never the same number twice."""

from pgcounter.client import ProjectCounter
from pgcounter.errors import (
    ConfigurationError,
    CounterError,
    CounterNotInstalledError,
    CounterTimeoutError,
)
from pgcounter.metrics import Metrics, NoMetrics
from pgcounter.retry import RetryPolicy

__all__ = [
    "ConfigurationError",
    "CounterError",
    "CounterNotInstalledError",
    "CounterTimeoutError",
    "Metrics",
    "NoMetrics",
    "ProjectCounter",
    "RetryPolicy",
]
