"""The alembic revisions: upgrade, downgrade, offline SQL, and an install from the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcounter import ConfigurationError, ProjectCounter, migrations
from pgcounter.bundle import read_sql

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pgcounter_objects(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        schema = conn.execute("SELECT to_regnamespace('pgcounter') IS NOT NULL").fetchone()
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'pgcounter'"
        ).fetchone()
        table = conn.execute(
            "SELECT to_regclass('pgcounter.project_counter') IS NOT NULL"
        ).fetchone()
    assert schema is not None
    assert functions is not None
    assert table is not None
    return {"schema": schema[0], "functions": functions[0], "table": table[0]}


NOTHING = {"schema": False, "functions": 0, "table": False}
EVERYTHING = {"schema": True, "functions": 6, "table": True}


def alembic(*args: str, dsn: str | None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != migrations.DSN_ENV}
    if dsn is not None:
        env[migrations.DSN_ENV] = dsn
    return subprocess.run(
        [str(BIN / "alembic"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_upgrade_and_downgrade_round_trip(empty_dsn: str) -> None:
    assert pgcounter_objects(empty_dsn) == NOTHING
    assert migrations.current_revision(empty_dsn) is None

    migrations.upgrade(empty_dsn)
    assert pgcounter_objects(empty_dsn) == EVERYTHING
    assert migrations.current_revision(empty_dsn) == migrations.head_revision()
    with ProjectCounter(empty_dsn, max_size=1) as counter:
        assert counter.increment(1) == 1

    migrations.downgrade(empty_dsn, "base")
    assert pgcounter_objects(empty_dsn) == NOTHING
    assert migrations.current_revision(empty_dsn) is None

    migrations.upgrade(empty_dsn)  # and back again, from nothing
    assert pgcounter_objects(empty_dsn) == EVERYTHING


def test_downgrade_refuses_to_drop_foreign_objects(empty_dsn: str) -> None:
    migrations.upgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pgcounter.not_ours (id int)")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        migrations.downgrade(empty_dsn, "base")
    # transactional DDL: the failed downgrade left everything in place
    assert pgcounter_objects(empty_dsn) == EVERYTHING
    assert migrations.current_revision(empty_dsn) == migrations.head_revision()


@pytest.mark.parametrize("form", ["url", "keyword"])
def test_alembic_command_line_from_the_repo_root(empty_dsn: str, form: str) -> None:
    params = conninfo_to_dict(empty_dsn)
    if form == "url":  # host as a query parameter: works for TCP and Unix-socket hosts alike
        query = urlencode({"host": params["host"], "port": params["port"]})
        dsn = f"postgresql://{params['user']}@/{params['dbname']}?{query}"
    else:
        dsn = make_conninfo("", **params)

    upgraded = alembic("upgrade", "head", dsn=dsn)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade  -> 0001" in upgraded.stderr
    assert "Running upgrade 0001 -> 0002" in upgraded.stderr
    assert pgcounter_objects(empty_dsn) == EVERYTHING

    downgraded = alembic("downgrade", "base", dsn=dsn)
    assert downgraded.returncode == 0, downgraded.stderr
    assert pgcounter_objects(empty_dsn) == NOTHING


def test_offline_sql_needs_no_database_and_carries_the_files_verbatim() -> None:
    result = alembic("upgrade", "head", "--sql", dsn=None)
    assert result.returncode == 0, result.stderr
    for name in ("schema.sql", "functions.sql"):
        assert read_sql(name).rstrip().removesuffix(";") in result.stdout
    assert "CREATE TABLE pgcounter_alembic_version" in result.stdout
    assert result.stdout.rstrip().endswith("COMMIT;")


def test_offline_downgrade_sql() -> None:
    result = alembic("downgrade", "head:base", "--sql", dsn=None)
    assert result.returncode == 0, result.stderr
    assert "DROP SCHEMA pgcounter" in result.stdout


def test_online_without_a_dsn_is_a_clear_error() -> None:
    result = alembic("upgrade", "head", dsn=None)
    assert result.returncode != 0
    assert "set PGCOUNTER_DSN" in result.stderr
    with pytest.raises(ConfigurationError, match="PGCOUNTER_DSN"):
        migrations.resolve_dsn(migrations.make_config())


@pytest.mark.slow
def test_migrate_from_an_installed_wheel(empty_dsn: str, tmp_path: Path) -> None:
    """Build the wheel, install it outside the repo, run its `pgcounter migrate` from there."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("pgcounter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pgcounter/_bundle/sql/functions.sql" in names
    assert "pgcounter/_bundle/alembic/versions/0001_install_bundle.py" in names

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != migrations.DSN_ENV}
    env["PYTHONPATH"] = str(site)
    env[migrations.DSN_ENV] = empty_dsn
    where = subprocess.run(
        [sys.executable, "-c", "import pgcounter.bundle as b; print(b.bundle_root())"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip() == str(site / "pgcounter" / "_bundle"), where.stderr

    migrate = subprocess.run(
        [str(site / "bin" / "pgcounter"), "migrate"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout.strip() == f"at revision {migrations.head_revision()}"
    assert pgcounter_objects(empty_dsn) == EVERYTHING


def test_each_revision_up_and_down(empty_dsn: str) -> None:
    """0002 adds the batch function to a database at 0001, and its downgrade removes it."""
    migrations.upgrade(empty_dsn, "0001")
    migrations.downgrade(empty_dsn, "base")
    assert pgcounter_objects(empty_dsn) == NOTHING
    migrations.upgrade(empty_dsn, "0001")
    migrations.upgrade(empty_dsn, "0002")
    migrations.upgrade(empty_dsn, "0003")
    migrations.upgrade(empty_dsn, "0004")
    migrations.upgrade(empty_dsn, "0005")
    assert pgcounter_objects(empty_dsn) == EVERYTHING
    migrations.downgrade(empty_dsn, "0004")
    assert pgcounter_objects(empty_dsn) == EVERYTHING
    migrations.downgrade(empty_dsn, "0003")
    assert pgcounter_objects(empty_dsn)["functions"] == 4
    migrations.downgrade(empty_dsn, "0002")
    assert pgcounter_objects(empty_dsn)["functions"] == 3
    with psycopg.connect(empty_dsn) as conn:  # 0002's functions: invoker rights, PUBLIC may run
        row = conn.execute(
            "SELECT bool_or(prosecdef), bool_and(has_function_privilege('public', oid, 'EXECUTE'))"
            " FROM pg_proc WHERE pronamespace = 'pgcounter'::regnamespace"
        ).fetchone()
    assert row == (False, True)
    migrations.downgrade(empty_dsn, "0001")
    assert pgcounter_objects(empty_dsn)["functions"] == 2
    assert migrations.current_revision(empty_dsn) == "0001"
    migrations.downgrade(empty_dsn, "base")
    assert pgcounter_objects(empty_dsn) == NOTHING
