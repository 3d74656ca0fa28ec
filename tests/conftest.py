"""Test databases: always a real PostgreSQL.

With PGCOUNTER_TEST_DSN set, that server is used as it is (pytest-postgresql's no-process
mode); without it, an embedded server is started in a temporary folder. Either way, each test
gets a fresh database cloned from a template that the bundle's migrations were run on.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

from pgcounter import ProjectCounter, migrations
from pgcounter.metrics import Tags

TEST_DSN_ENV = "PGCOUNTER_TEST_DSN"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str | None
    maintenance_db: str
    kind: str

    def dsn(self, dbname: str) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=dbname,
        )

    def janitor(self, dbname: str, **kwargs: Any) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=dbname,
            maintenance_dbname=self.maintenance_db,
            **kwargs,
        )


def _server_from_dsn(dsn: str, kind: str) -> Server:
    params = conninfo_to_dict(dsn)
    return Server(
        host=str(params.get("host") or "localhost"),
        port=int(params.get("port") or 5432),
        user=str(params.get("user") or "postgres"),
        password=str(params["password"]) if params.get("password") else None,
        maintenance_db=str(params.get("dbname") or "postgres"),
        kind=kind,
    )


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    dsn = os.environ.get(TEST_DSN_ENV)
    if dsn:
        yield _server_from_dsn(dsn, "external")
        return
    from pgcounter.embedded import EmbeddedServer

    # Under a temporary folder: the embedded server opens up the folders above its data dir.
    embedded = EmbeddedServer(tmp_path_factory.mktemp("embedded") / "pgdata", delete_on_exit=True)
    try:
        yield _server_from_dsn(embedded.dsn, "embedded")
    finally:
        embedded.stop()


def _migrate_loader(
    host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    migrations.upgrade(
        make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password or None)
    )


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    name = f"pgcounter_template_{os.getpid()}"
    janitor = pg_server.janitor(name, as_template=True)
    janitor.drop()
    with janitor:
        janitor.load(_migrate_loader)
        yield name


def _fresh_db(pg_server: Server, template: str | None) -> Iterator[str]:
    name = f"pgcounter_test_{uuid.uuid4().hex[:12]}"
    with pg_server.janitor(name, template_dbname=template):
        yield pg_server.dsn(name)


@pytest.fixture
def dsn(pg_server: Server, template_db: str) -> Iterator[str]:
    """A fresh database with the bundle installed."""
    yield from _fresh_db(pg_server, template_db)


@pytest.fixture
def empty_dsn(pg_server: Server) -> Iterator[str]:
    """A fresh database pgcounter was never migrated into."""
    yield from _fresh_db(pg_server, None)


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection to the test database, for setup and checks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


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
