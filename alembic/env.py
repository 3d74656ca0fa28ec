"""alembic environment for the pgcounter bundle.

Online, the database comes from `pgcounter migrate --dsn` or PGCOUNTER_DSN. Offline
(`--sql`), no database is needed: the SQL is printed for review. One transaction for the
whole run: PostgreSQL's DDL is transactional, so an upgrade or downgrade over several
revisions happens entirely or not at all.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from pgcounter.migrations import VERSION_TABLE, resolve_dsn, sqlalchemy_connection

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with sqlalchemy_connection(resolve_dsn(config)) as connection:
        context.configure(
            connection=connection,
            version_table=VERSION_TABLE,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
