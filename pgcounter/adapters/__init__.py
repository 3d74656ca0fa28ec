"""Ready metrics backends, each behind an optional extra:

- `pgcounter.adapters.prometheus.PrometheusMetrics` (extra `prometheus`)
- `pgcounter.adapters.opentelemetry.OpenTelemetryMetrics` (extra `opentelemetry`)
- `pgcounter.adapters.statsd.StatsdMetrics` (extras `statsd` or `dogstatsd`)
"""
