"""pgcounter's metrics as OpenTelemetry instruments (extra `opentelemetry`).

Counters keep pgcounter's names; the call duration is a histogram in milliseconds. Tags
become attributes. Without a meter, the global MeterProvider's `pgcounter` meter is used.
"""

from __future__ import annotations

import threading

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter

from pgcounter.metrics import Tags


class OpenTelemetryMetrics:
    def __init__(self, meter: Meter | None = None) -> None:
        self._meter = meter if meter is not None else metrics.get_meter("pgcounter")
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None:
        counter = self._counters.get(key)
        if counter is None:
            with self._lock:
                counter = self._counters.setdefault(
                    key, self._meter.create_counter(key, description=f"pgcounter: {key}")
                )
        counter.add(amount, attributes=dict(tags) if tags else None)

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None:
        histogram = self._histograms.get(key)
        if histogram is None:
            with self._lock:
                histogram = self._histograms.setdefault(
                    key,
                    self._meter.create_histogram(key, unit="ms", description=f"pgcounter: {key}"),
                )
        histogram.record(value, attributes=dict(tags) if tags else None)
