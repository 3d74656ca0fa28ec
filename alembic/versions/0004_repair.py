"""Add pgcounter.ensure_project_counter_at_least and ensure_project_counters: raise counters
that fell behind the numbers already used, never lower them.

Re-runs sql/functions.sql; the downgrade drops the two functions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from pgcounter.migrations import run_bundle_file

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    run_bundle_file("functions.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION pgcounter.ensure_project_counter_at_least(bigint, bigint)")
    op.execute("DROP FUNCTION pgcounter.ensure_project_counters(bigint[], bigint[])")
