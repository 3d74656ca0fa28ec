"""Every PL/pgSQL function of the bundle passes plpgsql_check with every warning turned on."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.sql_extensions import install_extension

# All of plpgsql_check's warning classes: a hidden cast or an unused variable is reported
# just like a reference to a column that does not exist.
CHECK = """
SELECT p.oid::regprocedure::text, c.level, c.lineno, c.message
  FROM pg_catalog.pg_proc AS p
  JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
 CROSS JOIN LATERAL plpgsql_check_function_tb(
        p.oid,
        fatal_errors => false,
        other_warnings => true,
        performance_warnings => true,
        extra_warnings => true,
        security_warnings => true,
        compatibility_warnings => true
     ) AS c
 WHERE p.pronamespace = %s::regnamespace
 ORDER BY 1, 3
"""


def findings(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(CHECK, (schema,)).fetchall()


def test_the_bundle_has_no_errors_or_warnings(dsn: str, db: psycopg.Connection[Any]) -> None:
    install_extension(dsn, "plpgsql_check")
    checked = db.execute(
        "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l"
        " ON l.oid = p.prolang WHERE l.lanname = 'plpgsql'"
        " AND p.pronamespace = 'pgcounter'::regnamespace"
    ).fetchone()
    assert checked == (6,)  # the test checks something
    assert findings(db, "pgcounter") == []


def test_the_check_finds_what_it_should(dsn: str, db: psycopg.Connection[Any]) -> None:
    """The same query reports a broken function and a hidden cast, so an empty result means
    clean, not unchecked."""
    install_extension(dsn, "plpgsql_check")
    db.execute("CREATE SCHEMA lint_probe")
    db.execute(
        "CREATE FUNCTION lint_probe.broken() RETURNS integer LANGUAGE plpgsql AS"
        " $$ DECLARE n integer; BEGIN SELECT count(*) INTO n FROM pgcounter.project_counter;"
        " RETURN (SELECT missing FROM pgcounter.project_counter); END $$"
    )
    found = findings(db, "lint_probe")
    levels = {(level, message.split(" ")[0]) for _, level, _, message in found}
    assert ("error", "column") in levels, found
    assert any(level == "performance" for level, _ in levels), found
