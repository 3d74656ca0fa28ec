"""The SQL bundle's own contract, tested in SQL with pgTAP (sql/tests/*.sql), run by pg_prove.

Each file is one pytest test, run against a fresh migrated database; the files roll back
whatever they do. By hand: `pg_prove -d "$DSN" sql/tests/*.sql` on a migrated database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.helpers import skip_unless
from tests.sql_extensions import install_extension

SQL_TESTS = Path(__file__).resolve().parent.parent / "sql" / "tests"
FILES = sorted(SQL_TESTS.glob("*.sql"))


def libpq_env(dsn: str) -> dict[str, str]:
    """The DSN as libpq variables for psql: pg_prove mangles a key=value --dbname, and the
    environment keeps a password off the command line."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in conninfo_to_dict(dsn).items():
        if key == "dbname":
            env["PGDATABASE"] = str(value)
        elif key in names and value:
            env[names[key]] = str(value)
    return env


def test_the_sql_tests_are_there() -> None:
    assert len(FILES) >= 5, f"pgTAP files missing from {SQL_TESTS}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_pgtap_file(dsn: str, path: Path) -> None:
    pg_prove = shutil.which("pg_prove")
    missing = "pg_prove is not installed (Debian: libtap-parser-sourcehandler-pgtap-perl)"
    skip_unless("pgtap", None if pg_prove else missing)
    assert pg_prove is not None
    install_extension(dsn, "pgtap")
    run = subprocess.run(
        [pg_prove, "--verbose", str(path)],
        env=libpq_env(dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "Result: PASS" in report, report
    assert "not ok" not in report, report
