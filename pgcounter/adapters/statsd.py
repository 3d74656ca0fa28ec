"""pgcounter's metrics over StatsD (extras `statsd` or `dogstatsd`).

Two kinds of client fit:

- DogStatsD (`datadog.DogStatsd`, or anything with `increment(name, value, tags=[...])`):
  tags are sent as DogStatsD tags, `attempt:1`.
- plain StatsD (`statsd.StatsClient`, with `incr(name, count)`): the protocol has no tags,
  so they are appended to the name in a fixed order, `….statement_timeout_retry.attempt_1`.
"""

from __future__ import annotations

from typing import Any

from pgcounter.metrics import Tags


class StatsdMetrics:
    def __init__(self, client: Any) -> None:
        self._client = client
        if callable(getattr(client, "increment", None)):
            self._dogstatsd = True
        elif callable(getattr(client, "incr", None)):
            self._dogstatsd = False
        else:
            raise TypeError(
                "pgcounter: a StatsD client needs increment() (DogStatsD) or incr() (StatsD)"
            )

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None:
        if self._dogstatsd:
            self._client.increment(key, amount, tags=_dog_tags(tags))
        else:
            self._client.incr(_tagged_name(key, tags), amount)

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None:
        if self._dogstatsd:
            self._client.timing(key, value, tags=_dog_tags(tags))
        else:
            self._client.timing(_tagged_name(key, tags), value)


def _dog_tags(tags: Tags | None) -> list[str] | None:
    return [f"{k}:{v}" for k, v in sorted(tags.items())] if tags else None


def _tagged_name(key: str, tags: Tags | None) -> str:
    if not tags:
        return key
    return key + "".join(f".{k}_{v}" for k, v in sorted(tags.items()))
