"""pgcounter's metrics as Prometheus counters and a histogram (extra `prometheus`).

Names follow Prometheus conventions: dots become underscores, counters get `_total`, and
the call duration is a histogram in seconds,
`counter_increment_project_counter_in_database_seconds`.
"""

from __future__ import annotations

import threading
import weakref
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from pgcounter.metrics import (
    DURATION,
    RETRY,
    STATEMENT_TIMEOUT_EXHAUSTED,
    STATEMENT_TIMEOUT_RETRY,
    Tags,
)

# Prometheus needs each metric's label names up front.
LABELS: dict[str, tuple[str, ...]] = {
    STATEMENT_TIMEOUT_RETRY: ("attempt", "reason"),
    STATEMENT_TIMEOUT_EXHAUSTED: (),
    RETRY: ("attempt", "reason"),
    DURATION: ("outcome", "attempts"),
}

M = TypeVar("M", Counter, Histogram)

_lock = threading.Lock()
# One metric object per registry and name, however many adapters share a registry.
_created: weakref.WeakKeyDictionary[
    CollectorRegistry, dict[str, tuple[Counter | Histogram, tuple[str, ...]]]
] = weakref.WeakKeyDictionary()


def prometheus_name(key: str) -> str:
    return key.replace(".", "_").replace("-", "_")


class PrometheusMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._registry = registry if registry is not None else REGISTRY

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None:
        self._child(Counter, prometheus_name(key), key, tags).inc(amount)

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None:
        name = prometheus_name(key) + "_seconds"
        self._child(Histogram, name, key, tags).observe(value / 1000.0)

    def _child(self, kind: type[M], name: str, key: str, tags: Tags | None) -> M:
        found = _created.get(self._registry, {}).get(name)
        if found is None:
            with _lock:
                metrics = _created.setdefault(self._registry, {})
                found = metrics.get(name)
                if found is None:
                    labels = LABELS.get(key, tuple(sorted(tags or ())))
                    created = kind(
                        name, f"pgcounter: {key}", labelnames=labels, registry=self._registry
                    )
                    found = metrics[name] = (created, labels)
        metric, labels = found
        assert isinstance(metric, kind)
        if not labels:
            return metric
        values = tags or {}
        return metric.labels(**{label: str(values.get(label, "")) for label in labels})
