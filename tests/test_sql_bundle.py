"""The SQL functions' contract, called directly: what every client relies on."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

Conn = psycopg.Connection[Any]
BIGINT_MAX = 2**63 - 1


def inc(db: Conn, project_id: int | None, delta: int | None = 1) -> int:
    row = db.execute(
        "SELECT pgcounter.increment_project_counter(%s, %s)", (project_id, delta)
    ).fetchone()
    assert row is not None
    return int(row[0])


def current(db: Conn, project_id: int) -> int:
    row = db.execute("SELECT pgcounter.current_project_counter(%s)", (project_id,)).fetchone()
    assert row is not None
    return int(row[0])


def table(db: Conn) -> list[tuple[int, int]]:
    return [
        (int(p), int(v))
        for p, v in db.execute("SELECT project_id, value FROM pgcounter.project_counter ORDER BY 1")
    ]


def test_first_call_returns_delta_then_counts_on(db: Conn) -> None:
    assert inc(db, 1) == 1
    assert inc(db, 1) == 2
    assert inc(db, 1) == 3
    assert inc(db, 2, 10) == 10
    assert inc(db, 2, 5) == 15
    assert table(db) == [(1, 3), (2, 15)]


def test_default_delta_is_one(db: Conn) -> None:
    row = db.execute("SELECT pgcounter.increment_project_counter(7)").fetchone()
    assert row == (1,)


def test_current_is_zero_for_unknown_project(db: Conn) -> None:
    assert current(db, 404) == 0
    inc(db, 404, 3)
    assert current(db, 404) == 3


@pytest.mark.parametrize(
    ("project_id", "delta", "sqlstate", "fragment"),
    [
        (None, 1, "22004", "project_id must not be NULL"),
        (1, None, "22004", "delta must not be NULL"),
        (1, 0, "22023", "delta must be at least 1, got 0"),
        (1, -5, "22023", "delta must be at least 1, got -5"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    db: Conn, project_id: int | None, delta: int | None, sqlstate: str, fragment: str
) -> None:
    inc(db, 1, 4)
    with pytest.raises(psycopg.Error) as info:
        inc(db, project_id, delta)
    assert info.value.sqlstate == sqlstate
    assert fragment in str(info.value)
    assert table(db) == [(1, 4)]


def test_current_refuses_null(db: Conn) -> None:
    with pytest.raises(errors.NullValueNotAllowed):
        db.execute("SELECT pgcounter.current_project_counter(NULL)")


def test_overflow_is_refused_and_changes_nothing(db: Conn) -> None:
    assert inc(db, 9, BIGINT_MAX - 1) == BIGINT_MAX - 1
    with pytest.raises(errors.NumericValueOutOfRange, match="would overflow bigint"):
        inc(db, 9, 2)
    assert current(db, 9) == BIGINT_MAX - 1
    assert inc(db, 9, 1) == BIGINT_MAX
    with pytest.raises(errors.NumericValueOutOfRange):
        inc(db, 9, 1)
    assert current(db, 9) == BIGINT_MAX


def test_table_refuses_non_positive_values(db: Conn) -> None:
    with pytest.raises(errors.CheckViolation):
        db.execute("INSERT INTO pgcounter.project_counter VALUES (1, 0)")


def test_every_function_pins_search_path(db: Conn) -> None:
    rows = db.execute(
        """
        SELECT p.proname, p.proconfig
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'pgcounter'
        """
    ).fetchall()
    assert {name for name, _ in rows} == {
        "increment_project_counter",
        "current_project_counter",
        "increment_project_counters",
        "grant_usage",
        "ensure_project_counters",
        "ensure_project_counter_at_least",
    }
    for name, config in rows:
        assert config == ["search_path=pg_catalog, pg_temp"], name


def test_callers_search_path_cannot_redirect_the_functions(db: Conn) -> None:
    """A look-alike table (or operator) earlier on the caller's search_path is never used."""
    db.execute("CREATE SCHEMA evil")
    db.execute("CREATE TABLE evil.project_counter (project_id bigint primary key, value bigint)")
    db.execute("SET search_path = evil, pgcounter, public")
    assert inc(db, 5) == 1
    assert db.execute("SELECT count(*) FROM evil.project_counter").fetchone() == (0,)
    db.execute("RESET search_path")
    assert table(db) == [(5, 1)]


def inc_many(db: Conn, ids: Any, deltas: Any) -> list[tuple[int, int]]:
    rows = db.execute(
        "SELECT project_id, value FROM pgcounter.increment_project_counters(%s, %s)",
        (ids, deltas),
    ).fetchall()
    return sorted((int(p), int(v)) for p, v in rows)


def test_batch_increments_many_projects_in_one_statement(db: Conn) -> None:
    inc(db, 2, 10)
    assert inc_many(db, [3, 1, 2], [1, 5, 2]) == [(1, 5), (2, 12), (3, 1)]
    assert inc_many(db, [1], [1]) == [(1, 6)]
    assert inc_many(db, [], []) == []
    assert table(db) == [(1, 6), (2, 12), (3, 1)]


@pytest.mark.parametrize(
    ("ids", "deltas", "sqlstate", "fragment"),
    [
        (None, [1], "22004", "must not be NULL"),
        ([1], None, "22004", "must not be NULL"),
        ([1, 2], [1], "22023", "differ in length"),
        ([1, None], [1, 1], "22004", "must not contain NULL"),
        ([1, 2], [1, None], "22004", "must not contain NULL"),
        ([1, 2], [1, 0], "22023", "every delta must be at least 1"),
        ([1, 1], [1, 1], "22023", "must not repeat a project"),
        ([[1, 2]], [[1, 1]], "22023", "one-dimensional"),
    ],
)
def test_batch_bad_input_is_refused_and_changes_nothing(
    db: Conn, ids: Any, deltas: Any, sqlstate: str, fragment: str
) -> None:
    inc(db, 1, 4)
    with pytest.raises(psycopg.Error) as info:
        db.execute(
            "SELECT * FROM pgcounter.increment_project_counters(%s::bigint[], %s::bigint[])",
            (ids, deltas),
        )
    assert info.value.sqlstate == sqlstate
    assert fragment in str(info.value)
    assert table(db) == [(1, 4)]


def test_batch_overflow_changes_nothing(db: Conn) -> None:
    inc(db, 9, BIGINT_MAX)
    with pytest.raises(errors.NumericValueOutOfRange, match="would overflow"):
        inc_many(db, [1, 9, 10], [1, 1, 1])
    assert table(db) == [(9, BIGINT_MAX)]
