"""Least privilege: SECURITY DEFINER counter functions, EXECUTE revoked from PUBLIC, and
pgcounter.grant_usage(role) to grant an application role exactly what it needs.

Re-runs sql/functions.sql. The downgrade turns the functions back into SECURITY INVOKER
ones executable by PUBLIC (as at 0002) and drops grant_usage; grants already made stay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from pgcounter.migrations import run_bundle_file

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

COUNTER_FUNCTIONS = (
    "pgcounter.increment_project_counter(bigint, bigint)",
    "pgcounter.current_project_counter(bigint)",
    "pgcounter.increment_project_counters(bigint[], bigint[])",
)


def upgrade() -> None:
    run_bundle_file("functions.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION pgcounter.grant_usage(regrole)")
    for function in COUNTER_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SECURITY INVOKER")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO PUBLIC")
