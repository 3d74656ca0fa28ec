"""Least privilege, with a real login role: it can take and read numbers, and nothing else."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from pgcounter import ProjectCounter
from pgcounter.cli import cli
from tests.helpers import as_role

DIRECT_WRITES = [
    "UPDATE pgcounter.project_counter SET value = 1",
    "DELETE FROM pgcounter.project_counter",
    "INSERT INTO pgcounter.project_counter VALUES (99, 1)",
    "SELECT * FROM pgcounter.project_counter",
    "SELECT pgcounter.grant_usage(current_user::regrole)",
    "SELECT pgcounter.ensure_project_counter_at_least(5, 1000)",
]


def test_an_ungranted_role_can_do_nothing(dsn: str, app_role: str) -> None:
    with (
        psycopg.connect(as_role(dsn, app_role), autocommit=True) as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        app.execute("SELECT pgcounter.increment_project_counter(1)")


def test_a_granted_role_can_take_and_read_numbers_and_nothing_else(dsn: str, app_role: str) -> None:
    result = CliRunner().invoke(cli, ["--dsn", dsn, "grant", app_role])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"granted {app_role}:")

    app_dsn = as_role(dsn, app_role)
    with ProjectCounter(app_dsn, max_size=1) as counter:
        assert counter.increment(5) == 1
        assert counter.increment(5, delta=4) == 5
        assert counter.increment_many({5: 1, 6: 2}) == {5: 6, 6: 2}
        assert counter.current(5) == 6

    with psycopg.connect(app_dsn, autocommit=True) as app:
        for statement in DIRECT_WRITES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    with psycopg.connect(dsn) as admin:  # the counter is exactly where the functions left it
        rows = admin.execute("SELECT * FROM pgcounter.project_counter ORDER BY 1").fetchall()
    assert rows == [(5, 6), (6, 2)]


def test_the_functions_run_as_their_owner_with_a_pinned_search_path(dsn: str) -> None:
    with psycopg.connect(dsn) as admin:
        rows = admin.execute(
            "SELECT p.proname, p.prosecdef, p.proconfig, has_function_privilege("
            "'public', p.oid, 'EXECUTE') FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'pgcounter' ORDER BY 1"
        ).fetchall()
    assert [(name, definer, public) for name, definer, _, public in rows] == [
        ("current_project_counter", True, False),
        ("ensure_project_counter_at_least", True, False),
        ("ensure_project_counters", True, False),
        ("grant_usage", False, False),
        ("increment_project_counter", True, False),
        ("increment_project_counters", True, False),
    ]
    assert all(config == ["search_path=pg_catalog, pg_temp"] for _, _, config, _ in rows)


@pytest.mark.parametrize(
    ("role", "fragment"),
    [("no_such_role_xyz", "there is no role named 'no_such_role_xyz'"), ("", "no role named")],
)
def test_grant_to_a_missing_role_is_one_line(dsn: str, role: str, fragment: str) -> None:
    result = CliRunner().invoke(cli, ["--dsn", dsn, "grant", role])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pgcounter: ")
    assert fragment in lines[0]


def test_grant_to_a_role_whose_name_needs_quoting(dsn: str) -> None:
    """A name with capitals and a space is granted as itself, not as a doubly quoted name."""
    name = f"App Role {uuid.uuid4().hex[:6]}"
    role = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    try:
        result = CliRunner().invoke(cli, ["--dsn", dsn, "grant", name])
        assert result.exit_code == 0, result.output
        with psycopg.connect(as_role(dsn, name), autocommit=True) as app:
            taken = app.execute("SELECT pgcounter.increment_project_counter(7, 2)").fetchone()
        assert taken == (2,)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))
            admin.execute(sql.SQL("DROP ROLE {}").format(role))
