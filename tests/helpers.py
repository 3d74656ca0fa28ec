"""Test helpers that act on a real server from another session."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@contextmanager
def row_lock_held(dsn: str, project_id: int) -> Iterator[psycopg.Connection[Any]]:
    """Another session holds the project's row lock (an open increment) until the block ends.

    The block may commit or roll back the yielded connection itself; otherwise it rolls back.
    """
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT pgcounter.increment_project_counter(%s, 1)", (project_id,))
        try:
            yield holder
        finally:
            if not holder.closed:
                holder.rollback()


def release_after(
    conn: psycopg.Connection[Any], seconds: float, *, commit: bool
) -> threading.Thread:
    """End `conn`'s transaction from a background thread after `seconds`."""

    def end() -> None:
        threading.Event().wait(seconds)
        if commit:
            conn.commit()
        else:
            conn.rollback()

    thread = threading.Thread(target=end, daemon=True)
    thread.start()
    return thread


def statement_timeout(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW statement_timeout").fetchone()
    assert row is not None
    return str(row[0])


REQUIRED_TOOLS_ENV = "PGCOUNTER_TEST_REQUIRE"


def skip_unless(tool: str, missing: str | None) -> None:
    """Skip with `missing` as the reason, or fail where the run requires `tool`.

    CI lists the tools it installs in PGCOUNTER_TEST_REQUIRE (comma-separated: pgtap,
    plpgsql_check, pgbouncer), so a tool that went missing there fails the run instead of
    quietly skipping its tests.
    """
    if missing is None:
        return
    required = {t.strip() for t in os.environ.get(REQUIRED_TOOLS_ENV, "").split(",")}
    if tool in required:
        pytest.fail(f"{tool} is required by {REQUIRED_TOOLS_ENV} but unavailable: {missing}")
    pytest.skip(missing)


def as_role(dsn: str, role: str) -> str:
    """`dsn`, logging in as `role` instead (trust or peer auth: no password)."""
    params = conninfo_to_dict(dsn)
    params["user"] = role
    params.pop("password", None)
    return make_conninfo("", **params)


def run_threads(count: int, target: Any) -> list[BaseException]:
    """Run target(0) … target(count - 1) in threads that start together; their errors."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def wrapped(i: int) -> None:
        start.wait()
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors
