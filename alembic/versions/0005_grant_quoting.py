"""grant_usage quotes a role's name once (a name that needs quoting, like "App Role", failed),
and ensure_project_counters counts without a hidden bigint-to-integer cast (plpgsql_check).

Re-runs sql/functions.sql. Both changes are in function bodies only, which stay at their
newest version on downgrade (see sql/README.md), so the downgrade has nothing to do.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from pgcounter.migrations import run_bundle_file

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    run_bundle_file("functions.sql")


def downgrade() -> None:
    """Nothing to undo: the signatures are unchanged and bodies stay at their newest."""
