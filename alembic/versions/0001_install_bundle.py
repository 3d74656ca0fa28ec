"""Install the pgcounter bundle: schema, counter table, functions.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from pgcounter.migrations import run_bundle_file

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    run_bundle_file("schema.sql")
    run_bundle_file("functions.sql")


def downgrade() -> None:
    run_bundle_file("uninstall.sql")
