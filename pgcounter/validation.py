"""Argument checks done before any I/O, so bad input never reaches the database."""

from __future__ import annotations

from collections.abc import Mapping

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1


def _require_int(name: str, value: object) -> int:
    # bool is an int subclass; True as a project id is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pgcounter: {name} must be an int, got {type(value).__name__}")
    return value


def check_project_id(project_id: object) -> int:
    value = _require_int("project_id", project_id)
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise ValueError(f"pgcounter: project_id {value} is outside the bigint range")
    return value


def check_delta(delta: object) -> int:
    value = _require_int("delta", delta)
    if value < 1:
        raise ValueError(f"pgcounter: delta must be at least 1, got {value}")
    if value > BIGINT_MAX:
        raise ValueError(f"pgcounter: delta {value} is outside the bigint range")
    return value


def check_batch(deltas: object) -> tuple[list[int], list[int]]:
    """{project_id: delta} checked, as two lists in project_id order (the lock order)."""
    if not isinstance(deltas, Mapping):
        raise TypeError(
            f"pgcounter: increment_many takes a mapping of project_id to delta, "
            f"got {type(deltas).__name__}"
        )
    checked = sorted((check_project_id(p), check_delta(d)) for p, d in deltas.items())
    return [p for p, _ in checked], [d for _, d in checked]


def check_value(value: object) -> int:
    """A counter value to repair to: 0 (nothing used yet) up to the bigint maximum."""
    number = _require_int("value", value)
    if not 0 <= number <= BIGINT_MAX:
        raise ValueError(f"pgcounter: a counter value must be between 0 and {BIGINT_MAX}")
    return number


def check_values(values: object) -> tuple[list[int], list[int]]:
    """{project_id: value} checked, as two lists in project_id order."""
    if not isinstance(values, Mapping):
        raise TypeError("pgcounter: expected a mapping of project_id to value")
    checked = sorted((check_project_id(p), check_value(v)) for p, v in values.items())
    return [p for p, _ in checked], [v for _, v in checked]


def check_prepare_threshold(threshold: object) -> int | None:
    """psycopg's prepare_threshold: None (never prepare) or an int >= 0 (0: at first use)."""
    if threshold is None:
        return None
    value = _require_int("prepare_threshold", threshold)
    if value < 0:
        raise ValueError(f"pgcounter: prepare_threshold must be None or >= 0, got {value}")
    return value
