"""Test databases: always a real PostgreSQL.

With PGCOUNTER_TEST_DSN set, that server is used as it is (pytest-postgresql's no-process
mode); without it, an embedded server is started in a temporary folder. Either way, each test
gets a fresh database cloned from a template that the bundle's migrations were run on.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

from pgcounter import ProjectCounter, migrations
from pgcounter.metrics import Tags

TEST_DSN_ENV = "PGCOUNTER_TEST_DSN"
SERVER_KIND = pytest.StashKey[str]()
EMBEDDED = pytest.StashKey[tuple[Any, Path]]()


def _apply_server_options(config: pytest.Config, dsn: str) -> None:
    """Point pytest-postgresql's no-process fixtures at the server `dsn` names."""
    params = conninfo_to_dict(dsn)
    config.option.postgresql_host = str(params.get("host") or "localhost")
    config.option.postgresql_port = int(params.get("port") or 5432)
    config.option.postgresql_user = str(params.get("user") or "postgres")
    config.option.postgresql_password = str(params.get("password") or "") or None
    config.option.postgresql_maintenance_dbname = str(params.get("dbname") or "postgres")
    # A run that was killed may have left its template behind.
    config.option.postgresql_drop_test_database = True


def pytest_configure(config: pytest.Config) -> None:
    dsn = os.environ.get(TEST_DSN_ENV)
    if dsn:
        config.stash[SERVER_KIND] = "external"
    else:
        from pgcounter.embedded import EmbeddedServer

        # Under a temporary folder: the embedded server opens up the folders above its data
        # directory, and it is deleted again when the run ends.
        root = Path(tempfile.mkdtemp(prefix="pgcounter-tests-"))
        embedded = EmbeddedServer(root / "pgdata", delete_on_exit=True)
        config.stash[EMBEDDED] = (embedded, root)
        config.stash[SERVER_KIND] = "embedded"
        dsn = embedded.dsn
    _apply_server_options(config, dsn)


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(EMBEDDED, None)
    if started is not None:
        embedded, root = started
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"pgcounter test server: {config.stash.get(SERVER_KIND, '?')}"


def _migrate(host: str, port: int, user: str, dbname: str, password: str | None, **_: Any) -> None:
    migrations.upgrade(
        make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password or None)
    )


# Databases through pytest-postgresql: a template migrated once per run, a fresh clone of
# it for every test; and a fresh database that was never migrated. Two runs against one
# server at the same time need different prefixes (PGCOUNTER_TEST_DB_PREFIX).
DB_PREFIX = os.environ.get("PGCOUNTER_TEST_DB_PREFIX", "pgcounter")
migrated_server = factories.postgresql_noproc(dbname=f"{DB_PREFIX}_tests", load=[_migrate])
migrated_db = factories.postgresql("migrated_server")
empty_server = factories.postgresql_noproc(dbname=f"{DB_PREFIX}_empty")
empty_db = factories.postgresql("empty_server")


def _dsn_of(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    return make_conninfo(
        host=info.host,
        port=info.port,
        user=info.user,
        password=info.password or None,
        dbname=info.dbname,
    )


@pytest.fixture
def dsn(migrated_db: psycopg.Connection[Any]) -> str:
    """A fresh database with the bundle installed."""
    return _dsn_of(migrated_db)


@pytest.fixture
def empty_dsn(empty_db: psycopg.Connection[Any]) -> str:
    """A fresh database pgcounter was never migrated into."""
    return _dsn_of(empty_db)


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection to the test database, for setup and checks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def app_role(dsn: str) -> Iterator[str]:
    """A fresh login role with no rights of its own; dropped again afterwards."""
    name = f"pgcounter_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@dataclass
class RecordingMetrics:
    """A metrics backend that remembers what it was told."""

    incrs: list[tuple[str, int, dict[str, str] | None]] = field(default_factory=list)
    timings: list[tuple[str, float, dict[str, str] | None]] = field(default_factory=list)

    def incr(self, key: str, amount: int = 1, tags: Tags | None = None) -> None:
        self.incrs.append((key, amount, dict(tags) if tags is not None else None))

    def timing(self, key: str, value: float, tags: Tags | None = None) -> None:
        self.timings.append((key, value, dict(tags) if tags is not None else None))

    def incr_keys(self) -> list[str]:
        return [key for key, _, _ in self.incrs]


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture
def counter(dsn: str, metrics: RecordingMetrics) -> Iterator[ProjectCounter]:
    with ProjectCounter(dsn, max_size=4, metrics=metrics) as c:
        yield c


@pytest.fixture
def pgcounter_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="pgcounter")
    return caplog
