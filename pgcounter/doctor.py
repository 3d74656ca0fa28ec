"""`pgcounter doctor`: is this database, and this role, ready for pgcounter?

The checks are data (`Check`: name, status, one-line detail, a hint, structured facts), so
the CLI only renders them as text or JSON and decides the exit code. Everything is read from
PostgreSQL's catalogs and statistics views in one READ ONLY transaction, with bind
parameters; nothing is changed, not even an embedded database that was never migrated, and
the doctor's own timeouts end with its transaction (a server connection shared through
PgBouncer is handed on clean).

A check that cannot be evaluated because an earlier one failed (no schema, so no table to
look at) is `skip`; a query that fails for a reason of its own becomes that check's `fail`,
so one odd database object never hides the other checks.
"""

from __future__ import annotations

import importlib.metadata
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, LiteralString

import psycopg
from alembic.script import ScriptDirectory
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgcounter import migrations
from pgcounter.bundle import sql_dir
from pgcounter.calls import FUNCTIONS, PINNED_SEARCH_PATH, SCHEMA, Function
from pgcounter.dsn import describe_dsn
from pgcounter.errors import one_line
from pgcounter.options import Settings

Status = Literal["ok", "skip", "warn", "fail"]
SEVERITY: Final[dict[Status, int]] = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}
MARKERS: Final[dict[Status, str]] = {"ok": "ok", "skip": "skip", "warn": "WARN", "fail": "FAIL"}

TABLE: Final = "project_counter"
# The versions pgcounter is tested on; every older major version is past its end of life.
MIN_SERVER_VERSION: Final = 150000
# Server settings reported as they are when a session of this role opens (role, database and
# server defaults, PGOPTIONS); transaction_timeout exists from PostgreSQL 17 on.
TIMEOUT_SETTINGS: Final = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
)
# The doctor's own transaction, once those were read: a catalog query never hangs it.
OWN_STATEMENT_TIMEOUT: Final = "10s"
OWN_LOCK_TIMEOUT: Final = "2s"
CLIENT_DEFAULTS: Final = Settings.build()
# Beyond this, a lock wait is no longer a moment of contention: pgcounter's own calls give up
# a wait at the lock timeout, so a wait (or a blocking transaction) older than the default
# statement timeout means calls on those projects are timing out now.
DEFAULT_MAX_LOCK_WAIT_MS: Final = CLIENT_DEFAULTS.timeouts.statement_timeout_ms


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: `detail` is a line for people, `data` the same facts for machines."""

    name: str
    status: Status
    detail: str
    hint: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "hint": self.hint,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Report:
    database: str  # describe_dsn(): never a password
    checks: tuple[Check, ...]

    @property
    def status(self) -> Status:
        """The worst status of any check; `skip` counts as `ok` (its cause failed already)."""
        worst = max((SEVERITY[c.status] for c in self.checks), default=0)
        return ("ok", "warn", "fail")[worst]

    def exit_code(self, *, strict: bool = False) -> int:
        """1 when a check failed (or, with `strict`, warned), else 0."""
        return int(SEVERITY[self.status] >= (1 if strict else 2))

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "database": self.database,
            "pgcounter": package_version(),
            "checks": [c.to_json() for c in self.checks],
        }

    def text(self) -> str:
        lines = [f"pgcounter doctor: {self.database} (pgcounter {package_version()})"]
        for c in self.checks:
            line = f"{MARKERS[c.status]:<4}  {c.name:<10}  {c.detail}"
            lines.append(f"{line}; fix: {c.hint}" if c.hint else line)
        counts = [
            f"{n} {word}"
            for status, word in (("fail", "failed"), ("warn", "warned"))
            if (n := sum(c.status == status for c in self.checks))
        ]
        lines.append(f"status: {self.status}" + (f" ({', '.join(counts)})" if counts else ""))
        return "\n".join(lines)


def package_version() -> str:
    try:
        return importlib.metadata.version("pgcounter")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


# --- what is read once ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    value: str
    source: str  # pg_settings.source: default, database, user, configuration file, …

    def shown(self, name: str) -> str:
        where = "" if self.source == "default" else f" ({self.source})"
        return f"{name}={self.value}{where}"


@dataclass(frozen=True, slots=True)
class FunctionRow:
    """A function of schema pgcounter as pg_proc has it."""

    oid: int
    name: str
    args: str
    returns: str
    security_definer: bool
    config: tuple[str, ...]
    owner: str
    public_execute: bool
    can_execute: bool  # by the current role

    @property
    def signature(self) -> str:
        return f"{self.name}({self.args})"

    def search_path(self) -> tuple[str, ...] | None:
        """The pinned search_path, normalised, or None when the function pins none."""
        for item in self.config:
            key, _, value = item.partition("=")
            if key == "search_path":
                return tuple(p.strip().strip('"') for p in value.split(",") if p.strip())
        return None


@dataclass(frozen=True, slots=True)
class Catalog:
    role: str
    superuser: bool
    schema_oid: int | None
    table_oid: int | None
    functions: tuple[FunctionRow, ...]

    def overloads(self, name: str) -> list[FunctionRow]:
        return [f for f in self.functions if f.name == name]

    def find(self, expected: Function) -> FunctionRow | None:
        return next((f for f in self.overloads(expected.name) if f.args == expected.args), None)


def read_settings(conn: psycopg.Connection[Any]) -> dict[str, Setting]:
    rows = conn.execute(
        "SELECT s.name, pg_catalog.current_setting(s.name), s.source"
        " FROM pg_catalog.pg_settings AS s WHERE s.name = ANY(%s)",
        ([*TIMEOUT_SETTINGS, "server_version", "default_transaction_read_only"],),
    ).fetchall()
    return {name: Setting(value, source) for name, value, source in rows}


def read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    """The pgcounter objects, from the catalogs, which every role may read (no USAGE needed)."""
    role = conn.execute(
        "SELECT r.rolname, r.rolsuper FROM pg_catalog.pg_roles AS r"
        " WHERE r.rolname = pg_catalog.current_user()"
    ).fetchone()
    assert role is not None
    schema = conn.execute(
        "SELECT n.oid FROM pg_catalog.pg_namespace AS n WHERE n.nspname = %s", (SCHEMA,)
    ).fetchone()
    table = conn.execute(
        "SELECT c.oid FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (SCHEMA, TABLE),
    ).fetchone()
    rows = conn.execute(
        "SELECT p.oid, p.proname, pg_catalog.oidvectortypes(p.proargtypes),"
        " pg_catalog.pg_get_function_result(p.oid), p.prosecdef,"
        " coalesce(p.proconfig, '{}'), pg_catalog.pg_get_userbyid(p.proowner),"
        " pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE'),"
        " pg_catalog.has_function_privilege(p.oid, 'EXECUTE')"
        " FROM pg_catalog.pg_proc AS p"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s ORDER BY p.proname, p.oid",
        (SCHEMA,),
    ).fetchall()
    functions = tuple(
        FunctionRow(oid, name, args, returns, definer, tuple(config), owner, public, mine)
        for oid, name, args, returns, definer, config, owner, public, mine in rows
    )
    return Catalog(
        role=role[0],
        superuser=role[1],
        schema_oid=schema[0] if schema else None,
        table_oid=table[0] if table else None,
        functions=functions,
    )


# --- the checks -------------------------------------------------------------------------


def check_server(version_num: int, version: str) -> Check:
    data = {"version": version, "version_num": version_num, "minimum": MIN_SERVER_VERSION}
    if version_num < MIN_SERVER_VERSION:
        return Check(
            "server",
            "fail",
            f"PostgreSQL {version} is older than pgcounter supports "
            f"({MIN_SERVER_VERSION // 10000} or newer)",
            f"upgrade the server to PostgreSQL {MIN_SERVER_VERSION // 10000} or newer",
            data,
        )
    return Check("server", "ok", f"PostgreSQL {version}", data=data)


def check_writable(in_recovery: bool, read_only: Setting) -> Check:
    """A standby, or a read-only default, makes every increment fail with 25006."""
    data = {"in_recovery": in_recovery, "default_transaction_read_only": read_only.value}
    if in_recovery:
        return Check(
            "writable",
            "fail",
            "the server is a standby in recovery: every increment fails (read-only, 25006)",
            "point pgcounter at the primary",
            data,
        )
    if read_only.value == "on":
        return Check(
            "writable",
            "fail",
            f"default_transaction_read_only is on ({read_only.source}) for this session: "
            "every increment in its own transaction fails (25006)",
            "reset default_transaction_read_only for the role or database "
            "(ALTER ROLE … RESET / ALTER DATABASE … RESET default_transaction_read_only)",
            data,
        )
    return Check("writable", "ok", "read-write (a primary, transactions read-write)", data=data)


def code_history() -> list[str]:
    """This pgcounter's revisions, head first."""
    script = ScriptDirectory.from_config(migrations.make_config())
    return [s.revision for s in script.walk_revisions()]


def classify_revision(recorded: Sequence[str], history: Sequence[str]) -> Check:
    """The database's recorded revision(s) against this pgcounter's history (head first)."""
    head = history[0]
    data: dict[str, Any] = {"database": list(recorded), "head": head}
    if len(recorded) > 1:
        return Check(
            "revision",
            "fail",
            f"{migrations.VERSION_TABLE} records several revisions ({', '.join(recorded)}); "
            "pgcounter's history has a single head",
            f"inspect {migrations.VERSION_TABLE}: it should hold one row",
            data,
        )
    if not recorded:
        return Check(
            "revision",
            "fail",
            f"schema {SCHEMA} exists but no revision is recorded (installed by hand?)",
            f"compare the database with `pgcounter migrate --sql`; if it matches, record "
            f"the revision with `alembic stamp {head}` from a checkout",
            data,
        )
    current = recorded[0]
    if current == head:
        return Check("revision", "ok", f"{current}, this pgcounter's head", data=data)
    if current in history:
        pending = list(reversed(history[: history.index(current)]))
        data["pending"] = pending
        return Check(
            "revision",
            "fail",
            f"behind: the database is at {current}, this pgcounter's head is {head} "
            f"(pending: {', '.join(pending)})",
            "run `pgcounter migrate`",
            data,
        )
    return Check(
        "revision",
        "fail",
        f"the database is at {current!r}, a revision this pgcounter ({package_version()}, "
        f"head {head}) does not know (migrated by a newer pgcounter)",
        "use the pgcounter release that migrated this database, or a newer one",
        data,
    )


def not_installed(data: dict[str, Any]) -> Check:
    return Check(
        "revision",
        "fail",
        "pgcounter is not installed (no revision recorded, no schema pgcounter)",
        "run `pgcounter migrate`",
        data,
    )


def check_revision(conn: psycopg.Connection[Any], catalog: Catalog) -> Check:
    """Read the version table the way alembic finds it: unqualified, through search_path."""
    history = code_history()
    data: dict[str, Any] = {"database": None, "head": history[0]}
    found = conn.execute(
        "SELECT n.nspname, c.relname, pg_catalog.has_table_privilege(c.oid, 'SELECT')"
        " FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.oid = pg_catalog.to_regclass(%s)",
        (migrations.VERSION_TABLE,),
    ).fetchone()
    if found is None:
        if catalog.schema_oid is None:
            return not_installed(data)
        return Check(
            "revision",
            "warn",
            f"cannot tell: role {catalog.role} sees no {migrations.VERSION_TABLE} in its "
            "search_path (it may be in a schema this role cannot use)",
            "run `pgcounter doctor` as the role that ran the migrations",
            data,
        )
    schema, table, readable = found
    if not readable:
        return Check(
            "revision",
            "warn",
            f"cannot tell: role {catalog.role} may not read {schema}.{table}",
            "run `pgcounter doctor` as the role that ran the migrations",
            data,
        )
    rows = conn.execute(
        sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(sql.Identifier(schema, table))
    ).fetchall()
    recorded = [str(r[0]) for r in rows]
    if not recorded and catalog.schema_oid is None:
        return not_installed(data)
    return classify_revision(recorded, history)


def function_problems(expected: Function, found: FunctionRow) -> list[str]:
    problems = []
    if found.returns != expected.returns:
        problems.append(f"returns {found.returns}, expected {expected.returns}")
    if found.security_definer != expected.security_definer:
        problems.append("not SECURITY DEFINER" if expected.security_definer else "SECURITY DEFINER")
    pinned = found.search_path()
    if pinned is None:
        problems.append("search_path not pinned")
    elif pinned != PINNED_SEARCH_PATH:
        problems.append(
            f"search_path pinned to {', '.join(pinned)}, expected {', '.join(PINNED_SEARCH_PATH)}"
        )
    if found.public_execute:
        problems.append("EXECUTE granted to PUBLIC")
    return problems


def check_functions(catalog: Catalog, revision: Check) -> Check:
    """Each function pgcounter calls: signature, return type, SECURITY DEFINER, pinned
    search_path, and no EXECUTE for PUBLIC (a SECURITY DEFINER function must not have it)."""
    findings: list[str] = []
    data: dict[str, Any] = {}
    for expected in FUNCTIONS:
        found = catalog.find(expected)
        entry: dict[str, Any] = {"expected": expected.signature, "exists": found is not None}
        if found is None:
            others = [f.signature for f in catalog.overloads(expected.name)]
            problem = "missing" + (f" (there is {', '.join(others)})" if others else "")
            problems = [problem]
        else:
            problems = function_problems(expected, found)
            entry.update(
                returns=found.returns,
                security_definer=found.security_definer,
                search_path=list(found.search_path() or ()),
                public_execute=found.public_execute,
                owner=found.owner,
            )
        entry["problems"] = problems
        data[expected.name] = entry
        if problems:
            findings.append(f"{expected.signature}: {'; '.join(problems)}")
    if not findings:
        return Check(
            "functions",
            "ok",
            f"{len(FUNCTIONS)} functions with the expected signatures, SECURITY DEFINER where "
            f"expected, search_path pinned to {', '.join(PINNED_SEARCH_PATH)}, "
            "no EXECUTE for PUBLIC",
            data=data,
        )
    if catalog.schema_oid is None:
        return Check(
            "functions",
            "fail",
            f"none of the {len(FUNCTIONS)} functions exists (no schema pgcounter)",
            "run `pgcounter migrate`",
            data,
        )
    if revision.status == "fail" and revision.hint:
        # Behind: migrate. Ahead: a newer pgcounter's functions, which the bundle of this
        # one must not overwrite. Either way the revision's remedy comes first.
        hint = revision.hint
    else:
        # functions.sql is all CREATE OR REPLACE plus the REVOKEs from PUBLIC: re-running it
        # restores every attribute checked here and keeps the grants to application roles.
        path = shlex.quote(str(sql_dir() / "functions.sql"))
        hint = (
            "re-run the bundle's functions as their owner: "
            f"psql -v ON_ERROR_STOP=1 -d DATABASE -f {path}"
        )
    return Check("functions", "fail", " | ".join(findings), hint, data)


def check_privileges(conn: psycopg.Connection[Any], catalog: Catalog) -> Check:
    """What the current role may do: what an application needs, and what it should not."""
    role = catalog.role
    if catalog.schema_oid is None:
        return Check("privileges", "skip", f"role {role}: no schema pgcounter to use")
    row = conn.execute(
        "SELECT pg_catalog.has_schema_privilege(%s::oid, 'USAGE')", (catalog.schema_oid,)
    ).fetchone()
    assert row is not None
    usage = bool(row[0])
    app = [f for f in FUNCTIONS if f.for_applications]
    others = [f for f in FUNCTIONS if not f.for_applications]
    executable = {f.name: r.can_execute for f in FUNCTIONS if (r := catalog.find(f)) is not None}
    lacking = ([] if usage else [f"USAGE on schema {SCHEMA}"]) + [
        f"EXECUTE on {f.signature}" for f in app if executable.get(f.name) is False
    ]
    writes: list[str] = []
    owner = False
    if catalog.table_oid is not None:
        found = conn.execute(
            "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE'),"
            " ARRAY(SELECT p FROM unnest(%s::text[]) AS p"
            "       WHERE pg_catalog.has_table_privilege(c.oid, p))"
            " FROM pg_catalog.pg_class AS c WHERE c.oid = %s::oid",
            (["INSERT", "UPDATE", "DELETE", "TRUNCATE"], catalog.table_oid),
        ).fetchone()
        assert found is not None
        owner, writes = bool(found[0]), list(found[1])
    data: dict[str, Any] = {
        "role": role,
        "superuser": catalog.superuser,
        "table_owner": owner,
        "schema_usage": usage,
        "execute": executable,
        "table_writes": writes,
    }
    who = f"role {role}" + (" (superuser)" if catalog.superuser else "")
    if lacking:
        return Check(
            "privileges",
            "fail",
            f"{who} lacks {', '.join(lacking)}: it cannot take numbers",
            f"as the owner: pgcounter grant {shlex.quote(role)}",
            data,
        )
    parts = [f"{who}: USAGE on schema {SCHEMA}, EXECUTE on the counter functions"]
    extra = [f.name for f in others if executable.get(f.name)]
    if extra:
        parts.append(f"also {', '.join(extra)}")
    table = f"{SCHEMA}.{TABLE}"
    if writes and not (owner or catalog.superuser):
        return Check(
            "privileges",
            "warn",
            "; ".join(parts) + f"; may also {', '.join(writes)} {table} directly, "
            "bypassing the functions (it could move a counter backwards)",
            f"revoke {', '.join(writes)} on {table} from {role} (or the role or PUBLIC that "
            "granted it): an application needs only `pgcounter grant`",
            data,
        )
    if writes:
        parts.append(
            f"may write {table} directly as {'a superuser' if catalog.superuser else 'its owner'}"
            " (expected for the role that migrates; applications get `pgcounter grant`)"
        )
    else:
        parts.append(f"no direct writes to {table}")
    return Check("privileges", "ok", "; ".join(parts), data=data)


# Sessions that wait for a heavyweight lock (what pg_stat_activity shows as wait_event_type
# 'Lock') and are blocked by a session holding a lock on the counter table, while touching it
# themselves. A row-lock waiter waits on the holder's transactionid (or a tuple lock), not on
# the table, so the table is matched through the locks both sides hold on it; pg_locks and
# pg_blocking_pids are visible to every role, unlike other users' rows of pg_stat_activity.
# A prepared transaction holds its locks with no pid, and pg_blocking_pids names it 0.
LOCK_WAITERS: Final[LiteralString] = """
WITH counter_locks AS (
    SELECT coalesce(l.pid, 0) AS pid, l.granted
      FROM pg_catalog.pg_locks AS l
     WHERE l.relation = %(table)s::oid
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                          WHERE d.datname = pg_catalog.current_database())
), waiting AS (
    SELECT w.pid, min(w.waitstart) AS waitstart
      FROM pg_catalog.pg_locks AS w
     WHERE NOT w.granted
       AND w.pid <> pg_catalog.pg_backend_pid()
       AND w.pid IN (SELECT pid FROM counter_locks)
     GROUP BY w.pid
), blocked AS (
    SELECT w.pid,
           coalesce(extract(epoch FROM pg_catalog.clock_timestamp() - w.waitstart) * 1000, 0)
               AS waited_ms,
           ARRAY(SELECT DISTINCT b FROM unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b
                  WHERE b IN (SELECT pid FROM counter_locks WHERE granted) ORDER BY b)
               AS blockers
      FROM waiting AS w
)
SELECT pid, waited_ms::float8, blockers FROM blocked
 WHERE cardinality(blockers) > 0 ORDER BY waited_ms DESC, pid
"""

BLOCKERS: Final[LiteralString] = """
SELECT a.pid, a.state, a.usename, a.application_name,
       extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8 * 1000
  FROM pg_catalog.pg_stat_activity AS a
 WHERE a.pid = ANY(%s)
"""


def check_locks(conn: psycopg.Connection[Any], catalog: Catalog, max_lock_wait_ms: int) -> Check:
    if catalog.table_oid is None:
        return Check("locks", "skip", f"no table {SCHEMA}.{TABLE}")
    waiters = conn.execute(LOCK_WAITERS, {"table": catalog.table_oid}).fetchall()
    data: dict[str, Any] = {
        "waiters": [{"pid": p, "waited_ms": round(ms), "blocked_by": b} for p, ms, b in waiters],
        "blockers": [],
        "max_lock_wait_ms": max_lock_wait_ms,
    }
    if not waiters:
        return Check("locks", "ok", "no session waits for a counter lock", data=data)
    blocker_pids = sorted({pid for _, _, blockers in waiters for pid in blockers})
    activity = {
        pid: (state, user, app, xact_ms)
        for pid, state, user, app, xact_ms in conn.execute(BLOCKERS, (blocker_pids,))
    }
    described = []
    oldest_ms = 0.0
    for pid in blocker_pids:
        state, user, app, xact_ms = activity.get(pid, (None, None, None, None))
        data["blockers"].append(
            {
                "pid": pid,
                "state": state,
                "user": user,
                "application_name": app,
                "transaction_ms": None if xact_ms is None else round(xact_ms),
            }
        )
        if pid == 0:
            described.append("a prepared transaction")
            continue
        shown = [state] if state else []
        if xact_ms is not None:
            shown.append(f"transaction open {duration(xact_ms)}")
        described.append(f"pid {pid}" + (f" ({', '.join(shown)})" if shown else ""))
        oldest_ms = max(oldest_ms, xact_ms or 0.0)
    longest_ms = max(ms for _, ms, _ in waiters)
    data.update(count=len(waiters), longest_wait_ms=round(longest_ms))
    detail = (
        f"{len(waiters)} session{'s' if len(waiters) > 1 else ''} waiting for counter locks "
        f"(longest {duration(longest_ms)}), blocked by {', '.join(described)}"
    )
    if max(longest_ms, oldest_ms) > max_lock_wait_ms:
        return Check(
            "locks",
            "fail",
            f"{detail}: longer than {max_lock_wait_ms} ms, so calls on those projects time out",
            "end or investigate the blocking transaction "
            "(SELECT pg_terminate_backend(PID) if it is stuck)",
            data,
        )
    return Check("locks", "warn", detail, data=data)


def check_timeouts(settings: dict[str, Setting]) -> Check:
    """Informational: pgcounter sets its own timeouts inside each call, so the session
    defaults never shorten or lengthen an increment; they matter to your own transactions
    (an idle one holding counter rows shows up under `locks`)."""
    client = {
        "statement_timeout_ms": CLIENT_DEFAULTS.timeouts.statement_timeout_ms,
        "lock_timeout_ms": CLIENT_DEFAULTS.timeouts.lock_timeout_ms,
        "deadline_ms": CLIENT_DEFAULTS.policy.deadline_ms,
        "max_retries": CLIENT_DEFAULTS.policy.max_retries,
    }
    session = {
        name: {"value": s.value, "source": s.source}
        for name in TIMEOUT_SETTINGS
        if (s := settings.get(name)) is not None
    }
    shown = ", ".join(settings[name].shown(name) for name in TIMEOUT_SETTINGS if name in settings)
    detail = (
        f"session defaults: {shown}; pgcounter's calls set their own: statement "
        f"{client['statement_timeout_ms']} ms, lock {client['lock_timeout_ms']} ms per "
        f"attempt, {client['deadline_ms']:.0f} ms per call"
    )
    return Check("timeouts", "ok", detail, data={"session": session, "client_defaults": client})


# --- running them -----------------------------------------------------------------------


def connect(dsn: str, connect_timeout_s: float) -> psycopg.Connection[Any]:
    """Not autocommit and read-only: the first statement opens BEGIN READ ONLY. No prepared
    statements, which a transaction pooler would not keep."""
    kwargs: dict[str, Any] = {"connect_timeout": connect_timeout_s, "prepare_threshold": None}
    if not conninfo_to_dict(dsn).get("application_name"):
        kwargs["application_name"] = "pgcounter doctor"
    conn = psycopg.connect(dsn, **kwargs)
    conn.read_only = True
    return conn


def guarded(conn: psycopg.Connection[Any], name: str, run: Callable[[], Check]) -> Check:
    """A check whose query fails is that check's failure (its savepoint is rolled back, so
    the other checks go on); a lost connection ends the run."""
    try:
        with conn.transaction():
            return run()
    except psycopg.Error as exc:
        if conn.broken:
            raise
        return Check(name, "fail", f"could not check: {one_line(exc)}")


def diagnose(
    dsn: str, *, max_lock_wait_ms: int = DEFAULT_MAX_LOCK_WAIT_MS, connect_timeout_s: float = 10
) -> Report:
    """Run every check against `dsn` as its role; raises psycopg.Error if it cannot connect."""
    with connect(dsn, connect_timeout_s) as conn:
        settings = read_settings(conn)  # before the doctor sets its own timeouts
        conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, true),"
            " pg_catalog.set_config('lock_timeout', %s, true)",
            (OWN_STATEMENT_TIMEOUT, OWN_LOCK_TIMEOUT),
        )
        catalog = read_catalog(conn)
        recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()
        assert recovery is not None
        revision = guarded(conn, "revision", lambda: check_revision(conn, catalog))
        checks = (
            check_server(conn.info.server_version, settings["server_version"].value),
            check_writable(bool(recovery[0]), settings["default_transaction_read_only"]),
            revision,
            check_functions(catalog, revision),
            guarded(conn, "privileges", lambda: check_privileges(conn, catalog)),
            guarded(conn, "locks", lambda: check_locks(conn, catalog, max_lock_wait_ms)),
            check_timeouts(settings),
        )
        conn.rollback()
    return Report(describe_dsn(dsn), checks)
