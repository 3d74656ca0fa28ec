"""Install the pgcounter bundle: schema, counter table, functions.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# alembic/versions/ -> the folder holding sql/ (the checkout, or the wheel's _bundle/)
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def run_sql_file(name: str) -> None:
    # alembic adds its own ";" after each statement in offline (--sql) output.
    op.execute((SQL_DIR / name).read_text(encoding="utf-8").rstrip().removesuffix(";"))


def upgrade() -> None:
    run_sql_file("schema.sql")
    run_sql_file("functions.sql")


def downgrade() -> None:
    run_sql_file("uninstall.sql")
