"""The ready metrics backends, each against its real library, fed by a real client run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from pgcounter import CounterTimeoutError, Metrics, ProjectCounter
from pgcounter.metrics import (
    DURATION,
    RETRY,
    STATEMENT_TIMEOUT_EXHAUSTED,
    STATEMENT_TIMEOUT_RETRY,
)
from tests.helpers import row_lock_held


def exercise(dsn: str, metrics: Metrics) -> None:
    """One clean increment, then one that times out twice and gives up."""
    with ProjectCounter(
        dsn, metrics=metrics, statement_timeout_ms=30, lock_timeout_ms=5000, max_retries=1
    ) as counter:
        counter.increment(1)
        with row_lock_held(dsn, 1), pytest.raises(CounterTimeoutError):
            counter.increment(1)


def test_prometheus(dsn: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client", reason="extra 'prometheus'")
    from pgcounter.adapters.prometheus import PrometheusMetrics

    registry = prometheus_client.CollectorRegistry()
    exercise(dsn, PrometheusMetrics(registry))
    exercise(dsn, PrometheusMetrics(registry))  # a second adapter on the same registry

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = registry.get_sample_value(name, labels)
        return value

    prefix = "counter_increment_project_counter_in_database"
    assert (
        sample(f"{prefix}_statement_timeout_retry_total", attempt="1", reason="statement_timeout")
        == 2
    )
    assert sample(f"{prefix}_statement_timeout_exhausted_total") == 2
    assert sample(f"{prefix}_retry_total", attempt="1", reason="statement_timeout") == 2
    assert sample(f"{prefix}_seconds_count", outcome="ok", attempts="1") == 2
    assert sample(f"{prefix}_seconds_count", outcome="timeout_exhausted", attempts="2") == 2
    slow = sample(f"{prefix}_seconds_sum", outcome="timeout_exhausted", attempts="2")
    assert slow is not None
    assert slow >= 2 * 0.060  # two attempts of 30 ms, twice, in seconds


def test_opentelemetry(dsn: str) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="extra 'opentelemetry' (and its sdk)")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from pgcounter.adapters.opentelemetry import OpenTelemetryMetrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    exercise(dsn, OpenTelemetryMetrics(provider.get_meter("pgcounter")))

    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points.setdefault(metric.name, []).append((dict(point.attributes or {}), point))
    retry = points[STATEMENT_TIMEOUT_RETRY]
    assert [(attrs, p.value) for attrs, p in retry] == [
        ({"attempt": "1", "reason": "statement_timeout"}, 1)
    ]
    assert [p.value for _, p in points[STATEMENT_TIMEOUT_EXHAUSTED]] == [1]
    durations = {attrs["outcome"]: p for attrs, p in points[DURATION]}
    assert durations["ok"].count == 1
    assert durations["timeout_exhausted"].count == 1
    assert durations["timeout_exhausted"].sum >= 60  # ms


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A StatsD server stand-in: a real UDP socket on loopback that keeps what it gets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        yield sock


def received(sock: socket.socket, count: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < count:
        payload = sock.recv(65536).decode()
        lines += [line for line in payload.split("\n") if line]
    return lines


def test_dogstatsd(dsn: str, udp: socket.socket) -> None:
    datadog = pytest.importorskip("datadog", reason="extra 'dogstatsd'")
    from pgcounter.adapters.statsd import StatsdMetrics

    host, port = udp.getsockname()
    client = datadog.DogStatsd(host=host, port=port, disable_telemetry=True)
    exercise(dsn, StatsdMetrics(client))
    lines = received(udp, 5)
    assert lines[0].startswith(f"{DURATION}:")
    assert lines[0].endswith("|ms|#attempts:1,outcome:ok")
    assert f"{STATEMENT_TIMEOUT_RETRY}:1|c|#attempt:1,reason:statement_timeout" in lines
    assert f"{RETRY}:1|c|#attempt:1,reason:statement_timeout" in lines
    assert f"{STATEMENT_TIMEOUT_EXHAUSTED}:1|c" in lines
    assert lines[-1].endswith("|ms|#attempts:2,outcome:timeout_exhausted")


def test_plain_statsd(dsn: str, udp: socket.socket) -> None:
    statsd = pytest.importorskip("statsd", reason="extra 'statsd'")
    from pgcounter.adapters.statsd import StatsdMetrics

    host, port = udp.getsockname()
    exercise(dsn, StatsdMetrics(statsd.StatsClient(host, port)))
    lines = received(udp, 5)
    assert lines[0].startswith(f"{DURATION}.attempts_1.outcome_ok:")
    assert lines[0].endswith("|ms")
    assert f"{STATEMENT_TIMEOUT_RETRY}.attempt_1.reason_statement_timeout:1|c" in lines
    assert f"{STATEMENT_TIMEOUT_EXHAUSTED}:1|c" in lines


def test_statsd_adapter_refuses_something_else() -> None:
    from pgcounter.adapters.statsd import StatsdMetrics

    with pytest.raises(TypeError, match="StatsD client"):
        StatsdMetrics(object())


def test_prometheus_many_registries_each_get_their_own_metrics() -> None:
    prometheus_client = pytest.importorskip("prometheus_client", reason="extra 'prometheus'")
    from pgcounter.adapters.prometheus import PrometheusMetrics

    name = "counter_increment_project_counter_in_database_statement_timeout_exhausted_total"
    for _ in range(50):  # fresh registries, often at a just-freed address
        registry = prometheus_client.CollectorRegistry()
        PrometheusMetrics(registry).incr(STATEMENT_TIMEOUT_EXHAUSTED)
        assert registry.get_sample_value(name) == 1
        del registry
