"""Running the bundle's alembic revisions from Python and from the `pgcounter` CLI.

The same scripts back `alembic upgrade head` in a checkout (through alembic.ini) and
`pgcounter migrate` from an installed wheel (through a Config built here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pgcounter.bundle import alembic_dir, read_sql
from pgcounter.errors import ConfigurationError

DSN_ENV = "PGCOUNTER_DSN"

# pgcounter lives inside its users' databases, which often run alembic for their own schema:
# a table name of its own keeps the two histories apart.
VERSION_TABLE = "pgcounter_alembic_version"


def run_bundle_file(name: str) -> None:
    """Execute one file of the SQL bundle inside a revision (online or into --sql output).

    alembic adds its own ";" after each statement in offline output, hence the trim.
    """
    from alembic import op

    op.execute(read_sql(name).rstrip().removesuffix(";"))


def make_config(dsn: str | None = None) -> Config:
    """An alembic Config for the bundle's scripts; `dsn` wins over PGCOUNTER_DSN."""
    config = Config()
    config.set_main_option("script_location", str(alembic_dir()))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def resolve_dsn(config: Config) -> str:
    dsn = config.attributes.get("dsn") or os.environ.get(DSN_ENV)
    if not dsn:
        raise ConfigurationError(
            f"pgcounter: no database given; set {DSN_ENV} to a libpq URL or key=value string"
        )
    return str(dsn)


@contextmanager
def sqlalchemy_connection(dsn: str) -> Iterator[sa.Connection]:
    """A SQLAlchemy connection over psycopg 3, built from a libpq DSN of either syntax.

    A creator callable, not a SQLAlchemy URL: libpq key=value strings, service files and
    PG* environment variables keep working exactly as they do for the client.
    """
    engine = sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        poolclass=sa.pool.NullPool,
    )
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@contextmanager
def _database_errors_as_psycopg() -> Iterator[None]:
    """SQLAlchemy wraps driver errors; callers of pgcounter get psycopg's, as from the client."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None
        raise


def upgrade(dsn: str, revision: str = "head") -> None:
    with _database_errors_as_psycopg():
        command.upgrade(make_config(dsn), revision)


def downgrade(dsn: str, revision: str) -> None:
    with _database_errors_as_psycopg():
        command.downgrade(make_config(dsn), revision)


def offline_sql(revision: str = "head") -> None:
    """Print the SQL of an upgrade to stdout, for a DBA to review; needs no database."""
    command.upgrade(make_config(), revision, sql=True)


def head_revision() -> str:
    head = ScriptDirectory.from_config(make_config()).get_current_head()
    assert head is not None
    return head


def current_revision(dsn: str) -> str | None:
    """The revision a database is at; None when pgcounter was never migrated into it."""
    with _database_errors_as_psycopg(), sqlalchemy_connection(dsn) as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
