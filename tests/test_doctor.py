"""`pgcounter doctor`: each check against a real database in the state it diagnoses."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcounter import calls, migrations
from pgcounter.bundle import read_sql
from pgcounter.cli import cli
from pgcounter.doctor import check_server, classify_revision
from tests.helpers import as_role, row_lock_held
from tests.test_cli import PGCOUNTER, UNREACHABLE, assert_one_line_error, subprocess_env

CHECKS = ["server", "writable", "revision", "functions", "privileges", "locks", "timeouts"]


def doctor(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--dsn", dsn, "doctor", *args], catch_exceptions=False)


def doctor_json(dsn: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = doctor(dsn, "--json", *args)
    assert result.stderr == ""
    return result.exit_code, json.loads(result.stdout)


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in document["checks"]}


def statuses(document: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in by_name(document).items()}


def text_line(result: Result, name: str) -> str:
    """The one line of the text output that reports check `name`."""
    lines = [line for line in result.stdout.splitlines() if line[6:].startswith(f"{name} ")]
    assert len(lines) == 1, result.stdout
    return lines[0]


def alter_database(dsn: str, setting: str, value: str | None) -> None:
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    # A session of its own that is read-write even after default_transaction_read_only=on.
    writable = "-c default_transaction_read_only=off"
    with psycopg.connect(dsn, autocommit=True, options=writable) as conn:
        if value is None:
            statement = sql.SQL("ALTER DATABASE {} RESET {}")
            conn.execute(statement.format(sql.Identifier(dbname), sql.Identifier(setting)))
        else:
            statement = sql.SQL("ALTER DATABASE {} SET {} = {}")
            conn.execute(
                statement.format(
                    sql.Identifier(dbname), sql.Identifier(setting), sql.Literal(value)
                )
            )


def test_a_healthy_database_is_all_ok(dsn: str) -> None:
    result = doctor(dsn)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pgcounter doctor: ")
    assert [line[:4] for line in lines[1:-1]] == ["ok  "] * len(CHECKS), result.stdout
    assert [line[6:].split()[0] for line in lines[1:-1]] == CHECKS
    assert lines[-1] == "status: ok"

    code, document = doctor_json(dsn)
    assert code == 0
    assert document["status"] == "ok"
    assert [check["name"] for check in document["checks"]] == CHECKS
    assert set(statuses(document).values()) == {"ok"}
    checks = by_name(document)
    assert checks["revision"]["data"]["database"] == [migrations.head_revision()]
    assert checks["server"]["data"]["version_num"] >= 150000
    assert checks["functions"]["data"]["increment_project_counter"]["search_path"] == [
        "pg_catalog",
        "pg_temp",
    ]
    assert checks["locks"]["data"]["waiters"] == []


def test_a_never_migrated_database_fails(empty_dsn: str) -> None:
    result = doctor(empty_dsn)
    assert result.exit_code == 1
    assert result.stderr == ""  # a finding, not an error: the report is on stdout
    assert text_line(result, "revision").startswith("FAIL")
    assert "run `pgcounter migrate`" in text_line(result, "revision")
    assert result.stdout.splitlines()[-1] == "status: fail (2 failed)"

    code, document = doctor_json(empty_dsn)
    assert code == 1
    assert document["status"] == "fail"
    assert statuses(document) == {
        "server": "ok",
        "writable": "ok",
        "revision": "fail",
        "functions": "fail",
        "privileges": "skip",
        "locks": "skip",
        "timeouts": "ok",
    }
    functions = by_name(document)["functions"]["data"]
    assert {entry["problems"][0] for entry in functions.values()} == {"missing"}


def test_a_database_one_revision_behind(dsn: str) -> None:
    migrations.downgrade(dsn, "-1")
    code, document = doctor_json(dsn)
    assert code == 1
    revision = by_name(document)["revision"]
    assert revision["status"] == "fail"
    assert revision["detail"].startswith("behind: ")
    assert revision["hint"] == "run `pgcounter migrate`"
    assert revision["data"]["pending"] == [migrations.head_revision()]

    migrations.upgrade(dsn)
    assert doctor(dsn).exit_code == 0


def test_a_database_migrated_by_a_newer_pgcounter(db: psycopg.Connection[Any], dsn: str) -> None:
    db.execute("UPDATE pgcounter_alembic_version SET version_num = 'f00d'")
    db.execute("ALTER FUNCTION pgcounter.current_project_counter(bigint) RESET search_path")
    code, document = doctor_json(dsn)
    assert code == 1
    revision, functions = by_name(document)["revision"], by_name(document)["functions"]
    assert revision["status"] == "fail"
    assert "'f00d', a revision this pgcounter" in revision["detail"]
    assert "newer pgcounter" in revision["detail"]
    # Never advice to overwrite a newer pgcounter's functions with this one's bundle.
    assert functions["status"] == "fail"
    assert functions["hint"] == revision["hint"]
    assert "functions.sql" not in functions["hint"]


@pytest.mark.parametrize(
    ("statement", "signature", "problem"),
    [
        (
            "ALTER FUNCTION pgcounter.current_project_counter(bigint) RESET search_path",
            "current_project_counter(bigint)",
            "search_path not pinned",
        ),
        (
            "ALTER FUNCTION pgcounter.increment_project_counter(bigint, bigint)"
            " SET search_path = public, pg_temp",
            "increment_project_counter(bigint, bigint)",
            "search_path pinned to public, pg_temp, expected pg_catalog, pg_temp",
        ),
        (
            "GRANT EXECUTE ON FUNCTION pgcounter.increment_project_counter(bigint, bigint)"
            " TO PUBLIC",
            "increment_project_counter(bigint, bigint)",
            "EXECUTE granted to PUBLIC",
        ),
        (
            "ALTER FUNCTION pgcounter.increment_project_counters(bigint[], bigint[])"
            " SECURITY INVOKER",
            "increment_project_counters(bigint[], bigint[])",
            "not SECURITY DEFINER",
        ),
        (
            "DROP FUNCTION pgcounter.ensure_project_counters(bigint[], bigint[])",
            "ensure_project_counters(bigint[], bigint[])",
            "missing",
        ),
    ],
)
def test_a_function_that_drifted_fails_by_name_and_the_hint_repairs_it(
    db: psycopg.Connection[Any], dsn: str, statement: str, signature: str, problem: str
) -> None:
    db.execute(statement.encode())
    result = doctor(dsn)
    assert result.exit_code == 1
    line = text_line(result, "functions")
    assert line.startswith("FAIL")
    assert f"{signature}: {problem}" in line
    assert "functions.sql" in line  # at head: re-run the bundle's functions, not migrate

    _, document = doctor_json(dsn)
    checks = by_name(document)
    assert problem in checks["functions"]["data"][signature.split("(")[0]]["problems"]
    assert [name for name, status in statuses(document).items() if status != "ok"] == ["functions"]

    db.execute(read_sql("functions.sql").encode())  # what the hint says
    assert doctor(dsn).exit_code == 0


def test_a_read_only_default_fails(dsn: str) -> None:
    alter_database(dsn, "default_transaction_read_only", "on")
    try:
        code, document = doctor_json(dsn)
    finally:
        alter_database(dsn, "default_transaction_read_only", None)
    assert code == 1
    writable = by_name(document)["writable"]
    assert writable["status"] == "fail"
    assert "default_transaction_read_only is on (database)" in writable["detail"]


def test_timeouts_are_the_sessions_own_and_the_clients(dsn: str) -> None:
    alter_database(dsn, "statement_timeout", "5s")
    alter_database(dsn, "idle_in_transaction_session_timeout", "1min")
    result = doctor(dsn)
    code, document = doctor_json(dsn)
    assert (result.exit_code, code) == (0, 0)
    assert "statement_timeout=5s (database)" in text_line(result, "timeouts")
    assert "lock_timeout=0," in text_line(result, "timeouts")
    timeouts = by_name(document)["timeouts"]
    assert timeouts["status"] == "ok"  # informational: every call sets its own
    session = timeouts["data"]["session"]
    assert session["statement_timeout"] == {"value": "5s", "source": "database"}
    assert session["idle_in_transaction_session_timeout"] == {"value": "1min", "source": "database"}
    assert session["lock_timeout"] == {"value": "0", "source": "default"}
    assert timeouts["data"]["client_defaults"] == {
        "statement_timeout_ms": 3000,
        "lock_timeout_ms": 2500,
        "deadline_ms": 10000,
        "max_retries": 3,
    }


def test_a_role_without_grants_fails_until_granted(dsn: str, app_role: str) -> None:
    app_dsn = as_role(dsn, app_role)
    result = doctor(app_dsn)
    assert result.exit_code == 1
    line = text_line(result, "privileges")
    assert line.startswith("FAIL")
    assert f"role {app_role} lacks USAGE on schema pgcounter" in line
    assert "EXECUTE on increment_project_counter(bigint, bigint)" in line
    assert f"fix: as the owner: pgcounter grant {app_role}" in line

    code, document = doctor_json(app_dsn)
    assert code == 1
    assert statuses(document) == {
        "server": "ok",
        "writable": "ok",
        "revision": "warn",  # the version table is not the application's to read
        "functions": "ok",  # the catalogs are
        "privileges": "fail",
        "locks": "ok",
        "timeouts": "ok",
    }
    assert f"role {app_role} may not read" in by_name(document)["revision"]["detail"]

    granted = CliRunner().invoke(cli, ["--dsn", dsn, "grant", app_role])
    assert granted.exit_code == 0, granted.output

    code, document = doctor_json(app_dsn)
    assert code == 0  # a warning is not a failure
    assert document["status"] == "warn"
    privileges = by_name(document)["privileges"]
    assert privileges["status"] == "ok"
    assert "no direct writes to pgcounter.project_counter" in privileges["detail"]
    assert privileges["data"]["execute"]["ensure_project_counters"] is False
    assert doctor(app_dsn, "--strict").exit_code == 1


def test_a_role_that_may_write_the_table_directly_is_warned(dsn: str, app_role: str) -> None:
    assert CliRunner().invoke(cli, ["--dsn", dsn, "grant", app_role]).exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT UPDATE, DELETE ON pgcounter.project_counter TO {}").format(
                sql.Identifier(app_role)
            )
        )
    _, document = doctor_json(as_role(dsn, app_role))
    privileges = by_name(document)["privileges"]
    assert privileges["status"] == "warn"
    assert "may also UPDATE, DELETE pgcounter.project_counter directly" in privileges["detail"]
    assert privileges["data"]["table_writes"] == ["UPDATE", "DELETE"]


def waiting_for_lock(db: psycopg.Connection[Any], pid: int) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


def test_lock_waiters_are_reported(db: psycopg.Connection[Any], dsn: str) -> None:
    outcome: list[int] = []
    # The holder ends first, also when an assertion fails: the blocked thread then finishes
    # and its connection can close.
    with psycopg.connect(dsn, autocommit=True) as waiter, row_lock_held(dsn, 7) as holder:
        waiter.execute("SET statement_timeout = '30s'")
        waiter_pid = waiter.info.backend_pid

        def increment() -> None:
            row = waiter.execute("SELECT pgcounter.increment_project_counter(7, 1)").fetchone()
            assert row is not None
            outcome.append(row[0])

        thread = threading.Thread(target=increment, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not waiting_for_lock(db, waiter_pid):
            assert time.monotonic() < deadline, "the second increment never blocked"
            time.sleep(0.02)

        code, document = doctor_json(dsn, "--max-lock-wait-ms", "60000")
        assert code == 0  # contention of the moment: a warning
        locks = by_name(document)["locks"]
        assert locks["status"] == "warn"
        assert [w["pid"] for w in locks["data"]["waiters"]] == [waiter_pid]
        assert locks["data"]["waiters"][0]["blocked_by"] == [holder.info.backend_pid]
        assert locks["data"]["blockers"][0]["state"] == "idle in transaction"
        assert f"blocked by pid {holder.info.backend_pid} (idle in transaction" in locks["detail"]
        assert locks["detail"].startswith("1 session waiting for counter locks")

        time.sleep(0.05)
        result = doctor(dsn, "--max-lock-wait-ms", "1")  # older than the threshold: fails
        assert result.exit_code == 1
        line = text_line(result, "locks")
        assert line.startswith("FAIL")
        assert "pg_terminate_backend" in line

        holder.rollback()
        thread.join(10)
    assert outcome == [1]
    code, document = doctor_json(dsn)
    assert (code, by_name(document)["locks"]["status"]) == (0, "ok")


def test_the_password_is_never_printed(dsn: str) -> None:
    params = conninfo_to_dict(dsn)
    secret = str(params.get("password") or "s3cret-pw")  # trust auth ignores one it never asks for
    params["password"] = secret
    with_password = make_conninfo("", **params)
    result = doctor(with_password)
    assert result.exit_code == 0, result.output
    assert "pgcounter doctor: host=" in result.stdout
    code, document = doctor_json(with_password)
    assert code == 0
    assert secret not in result.output
    assert secret not in json.dumps(document)

    unreachable = doctor(UNREACHABLE)
    assert_one_line_error(unreachable, 1, "cannot connect to host=127.0.0.1 port=1")
    assert "s3cret-pw" not in unreachable.output


def test_the_exit_code_of_the_real_command(empty_dsn: str, tmp_path: Path) -> None:
    failed = subprocess.run(
        [str(PGCOUNTER), "doctor"],
        env=subprocess_env(PGCOUNTER_DSN=empty_dsn),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (failed.returncode, failed.stderr) == (1, "")
    assert failed.stdout.splitlines()[-1] == "status: fail (2 failed)"


def test_servers_older_than_15_fail() -> None:
    assert check_server(140011, "14.11").status == "fail"
    assert "older than pgcounter supports (15 or newer)" in check_server(140011, "14.11").detail
    assert check_server(150000, "15.0").status == "ok"


def test_several_recorded_revisions_fail() -> None:
    check = classify_revision(["0002", "0003"], ["0003", "0002", "0001"])
    assert check.status == "fail"
    assert "several revisions" in check.detail


def test_the_expected_functions_are_those_of_the_bundle_and_the_statements() -> None:
    """calls.FUNCTIONS is the one list: it names every function the bundle creates, and
    every function a statement of pgcounter calls."""
    expected = {f.name for f in calls.FUNCTIONS}
    created = set(
        re.findall(r"CREATE OR REPLACE FUNCTION pgcounter\.(\w+)\(", read_sql("functions.sql"))
    )
    called = {
        name
        for value in vars(calls).values()
        if isinstance(value, str)
        for name in re.findall(r"pgcounter\.(\w+)\(", value)
    }
    assert created == expected
    assert called <= expected
    assert {"increment_project_counter", "grant_usage"} <= called
