"""Add pgcounter.increment_project_counters: many projects in one statement.

Re-runs sql/functions.sql (all CREATE OR REPLACE): the existing functions stay as they are,
the batch function is added. The downgrade drops what this revision added.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from pgcounter.migrations import run_bundle_file

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    run_bundle_file("functions.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION pgcounter.increment_project_counters(bigint[], bigint[])")
