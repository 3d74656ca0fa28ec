"""Repair and import: raise counters that fell behind the numbers already used."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgcounter import ProjectCounter
from pgcounter.cli import cli

Conn = psycopg.Connection[Any]


def table(db: Conn) -> list[tuple[int, int]]:
    rows = db.execute("SELECT project_id, value FROM pgcounter.project_counter ORDER BY 1")
    return [(int(p), int(v)) for p, v in rows]


def test_ensure_raises_never_lowers(counter: ProjectCounter, db: Conn) -> None:
    counter.increment(1, delta=10)
    assert counter.ensure_at_least(1, 25) == 25
    assert counter.ensure_at_least(1, 5) == 25  # never down
    assert counter.increment(1) == 26  # numbers continue above the repaired value
    assert counter.ensure_at_least(2, 0) == 0  # nothing used: nothing created
    assert counter.ensure_at_least(3, 7) == 7  # a project never incremented
    assert table(db) == [(1, 26), (3, 7)]


def test_ensure_many_reports_how_many_moved(counter: ProjectCounter, db: Conn) -> None:
    counter.increment(1, delta=10)
    counter.increment(2, delta=3)
    assert counter.ensure_many({1: 4, 2: 8, 3: 1, 4: 0}) == 2  # 2 raised, 3 created
    assert table(db) == [(1, 10), (2, 8), (3, 1)]
    assert counter.ensure_many({}) == 0


@pytest.mark.parametrize(
    ("call", "sqlstate"),
    [
        ("SELECT pgcounter.ensure_project_counter_at_least(NULL, 1)", "22004"),
        ("SELECT pgcounter.ensure_project_counter_at_least(1, -1)", "22023"),
        ("SELECT pgcounter.ensure_project_counters('{1,2}', '{1}')", "22023"),
        ("SELECT pgcounter.ensure_project_counters('{1,NULL}', '{1,1}')", "22004"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(db: Conn, call: str, sqlstate: str) -> None:
    db.execute("SELECT pgcounter.increment_project_counter(1, 3)")
    with pytest.raises(psycopg.Error) as info:
        db.execute(call)
    assert info.value.sqlstate == sqlstate
    assert table(db) == [(1, 3)]


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (2**63, ValueError), ("1", TypeError)]
)
def test_client_refuses_bad_values_before_io(dsn: str, value: Any, error: type) -> None:
    counter = ProjectCounter(dsn, max_size=1)
    counter.close()
    with pytest.raises(error):
        counter.ensure_at_least(1, value)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_cli_ensure(dsn: str, db: Conn) -> None:
    assert run("--dsn", dsn, "ensure", "4", "40").stdout == "40\n"
    assert run("--dsn", dsn, "ensure", "4", "10").stdout == "40\n"
    result = run("--dsn", dsn, "ensure", "4", "-- -1")
    assert result.exit_code == 2


def test_cli_import_from_a_query_repairs_in_one_transaction(dsn: str, db: Conn) -> None:
    db.execute("CREATE TABLE issues (project_id bigint, short_id bigint)")
    db.execute("INSERT INTO issues VALUES (1, 5), (1, 17), (2, 3), (3, 9)")
    db.execute("SELECT pgcounter.increment_project_counter(2, 8)")  # ahead already
    result = run(
        "--dsn", dsn, "import", "--query",
        "SELECT project_id, max(short_id) FROM issues GROUP BY 1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 of 3 counters moved\n"
    assert table(db) == [(1, 17), (2, 8), (3, 9)]


def test_cli_import_from_a_legacy_counter_table(dsn: str, db: Conn) -> None:
    db.execute("CREATE SCHEMA legacy")
    db.execute("CREATE TABLE legacy.projectcounter (project_id bigint, value bigint)")
    db.execute("INSERT INTO legacy.projectcounter VALUES (7, 70), (8, 80)")
    result = run("--dsn", dsn, "import", "--table", "legacy.projectcounter")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 of 2 counters moved\n"
    assert table(db) == [(7, 70), (8, 80)]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        ([], 2, "exactly one of --query and --table"),
        (["--query", "SELECT 1", "--table", "t"], 2, "exactly one of --query and --table"),
        (["--query", "SELECT 'a', 1"], 1, "must be (project_id, value) integers"),
        (["--query", "SELECT 1, NULL::bigint"], 1, "must be (project_id, value) integers"),
        (["--query", "SELECT 1, -5"], 1, "between 0 and"),
        (["--query", "SELEC nonsense"], 1, "syntax error"),
        (["--table", "no_such_table"], 1, "does not exist"),
    ],
)
def test_cli_import_bad_input_is_one_line_and_changes_nothing(
    dsn: str, db: Conn, args: list[str], code: int, fragment: str
) -> None:
    db.execute("SELECT pgcounter.increment_project_counter(1, 2)")
    result = run("--dsn", dsn, "import", *args)
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert table(db) == [(1, 2)]
