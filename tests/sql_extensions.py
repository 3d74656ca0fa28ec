"""Server extensions the SQL-level tests need, installed into the fresh test database."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.helpers import skip_unless

# Where each comes from. pgTAP is plain SQL: .ci/run copies Debian's files into the embedded
# servers as well; plpgsql_check is compiled for PostgreSQL 15 only.
SOURCES = {
    "pgtap": "Debian's postgresql-15-pgtap, whose files .ci/run also copies into an "
    "embedded server",
    "plpgsql_check": "Debian's postgresql-15-plpgsql-check, for PostgreSQL 15 only",
}


def install_extension(dsn: str, name: str) -> None:
    """CREATE EXTENSION `name` in the test database, or skip (fail where CI requires it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'),"
            " EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = %s)",
            (name,),
        ).fetchone()
        assert row is not None
        version, available = row
        missing = None
        if not available:
            missing = (
                f"the test server (PostgreSQL {version}) has no {name} extension "
                f"(from {SOURCES[name]})"
            )
        skip_unless(name, missing)
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
