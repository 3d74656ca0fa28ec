"""The statements the clients send, and the order they send them in.

They only call the bundle's functions (sql/functions.sql) and PostgreSQL's own; the tables
and function bodies are never repeated in Python. A plan is a tuple of `Step`s that a client
sends in one pipeline: one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, LiteralString

INCREMENT: Final[LiteralString] = "SELECT pgcounter.increment_project_counter(%s, %s)"
INCREMENT_MANY: Final[LiteralString] = (
    "SELECT project_id, value FROM pgcounter.increment_project_counters(%s::bigint[], %s::bigint[])"
)
CURRENT: Final[LiteralString] = "SELECT pgcounter.current_project_counter(%s)"
ENSURE: Final[LiteralString] = "SELECT pgcounter.ensure_project_counter_at_least(%s, %s)"
ENSURE_MANY: Final[LiteralString] = (
    "SELECT pgcounter.ensure_project_counters(%s::bigint[], %s::bigint[])"
)
# The role by its exact name (no identifier parsing); no row when there is no such role.
GRANT_USAGE: Final[LiteralString] = (
    "SELECT pgcounter.grant_usage(r.oid::regrole) FROM pg_catalog.pg_roles AS r"
    " WHERE r.rolname = %s"
)

# Explicit: a database whose default isolation is REPEATABLE READ or SERIALIZABLE would turn
# every concurrent increment of a project into a serialization failure.
BEGIN: Final[LiteralString] = "BEGIN ISOLATION LEVEL READ COMMITTED"
COMMIT: Final[LiteralString] = "COMMIT"
ROLLBACK: Final[LiteralString] = "ROLLBACK"

# Scoped like SET LOCAL: the values end with the (sub)transaction. SET LOCAL itself cannot
# take a bind parameter; set_config can.
SET_LOCAL_TIMEOUTS: Final[LiteralString] = (
    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)"
)

# In the caller's transaction: a savepoint per attempt, so that a failed attempt is undone
# without aborting the caller's work. Releasing a savepoint keeps the SET LOCAL values made
# inside it, so the caller's own values are stashed first and put back before the release.
SAVEPOINT: Final[LiteralString] = "SAVEPOINT pgcounter_increment"
RELEASE: Final[LiteralString] = "RELEASE SAVEPOINT pgcounter_increment"
ROLLBACK_TO: Final[LiteralString] = "ROLLBACK TO SAVEPOINT pgcounter_increment"
STASH_CALLER_TIMEOUTS: Final[LiteralString] = (
    "SELECT set_config('pgcounter.caller_statement_timeout', "
    "current_setting('statement_timeout'), true), "
    "set_config('pgcounter.caller_lock_timeout', current_setting('lock_timeout'), true)"
)
RESTORE_CALLER_TIMEOUTS: Final[LiteralString] = (
    "SELECT set_config('statement_timeout', "
    "current_setting('pgcounter.caller_statement_timeout'), true), "
    "set_config('lock_timeout', current_setting('pgcounter.caller_lock_timeout'), true)"
)


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a plan.

    `prepare=None` lets psycopg prepare it once used often enough; False never. A statement
    that can follow a failing one in the same pipeline must be False: psycopg counts it as
    prepared even when the server skipped it, and every later use of it would then fail.
    """

    sql: LiteralString
    params: tuple[object, ...] | None = None
    prepare: bool | None = False
    result: bool = False


def increment(project_id: int, delta: int) -> Step:
    return Step(INCREMENT, (project_id, delta), prepare=None, result=True)


def increment_many(project_ids: list[int], deltas: list[int]) -> Step:
    return Step(INCREMENT_MANY, (project_ids, deltas), prepare=None, result=True)


def ensure(project_id: int, value: int) -> Step:
    return Step(ENSURE, (project_id, value), prepare=None, result=True)


def ensure_many(project_ids: list[int], values: list[int]) -> Step:
    return Step(ENSURE_MANY, (project_ids, values), prepare=None, result=True)


def autonomous(call: Step, statement_ms: str, lock_ms: str) -> tuple[Step, ...]:
    """The call as a transaction of its own.

    BEGIN and the timeouts may be prepared too: they open the pipeline on an idle
    connection, so no earlier statement can fail and make the server skip them.
    """
    return (
        Step(BEGIN, prepare=None),
        Step(SET_LOCAL_TIMEOUTS, (statement_ms, lock_ms), prepare=None),
        call,
        Step(COMMIT),
    )


def in_caller_transaction(call: Step, statement_ms: str, lock_ms: str) -> tuple[Step, ...]:
    """The call inside the caller's open transaction, in a savepoint."""
    return (
        Step(SAVEPOINT),
        Step(STASH_CALLER_TIMEOUTS),
        Step(SET_LOCAL_TIMEOUTS, (statement_ms, lock_ms)),
        call,
        Step(RESTORE_CALLER_TIMEOUTS),
        Step(RELEASE),
    )


@dataclass(frozen=True, slots=True)
class OneQuery:
    """A plan as one query string, for the simple query protocol (`pipeline=False`).

    Sent as one Query message with the parameters bound client-side (psycopg's
    ClientCursor, which quotes them), it is still one round trip, and the server answers
    it with one ReadyForQuery, after which the client sends nothing: no named prepared
    statement, and none of the Flush that psycopg's pipeline sends after its Sync while
    results are on their way. A transaction pooler (PgBouncer 1.18) hands the server
    connection on at that ReadyForQuery; a Flush arriving after it makes the pooler give a
    server connection to a client that then sits idle. PostgreSQL 13+ times each statement
    of the string on its own, so the timeouts one statement sets apply to the next, as in
    the pipeline.
    """

    sql: LiteralString
    params: tuple[object, ...]
    result: int | None
    """Which statement's result the caller reads (its index), if any."""


def one_query(plan: tuple[Step, ...]) -> OneQuery:
    return OneQuery(
        "; ".join(step.sql for step in plan),
        tuple(param for step in plan for param in step.params or ()),
        next((index for index, step in enumerate(plan) if step.result), None),
    )


UNDO_ATTEMPT: Final[tuple[Step, ...]] = (Step(ROLLBACK_TO), Step(RELEASE))
"""After a failed attempt in the caller's transaction: the savepoint's work and settings
are undone, and the caller's transaction is usable again."""


@dataclass(frozen=True, slots=True)
class Function:
    """A function of the bundle that pgcounter calls, as the database must have it.

    `pgcounter doctor` compares the database against this list, so the contract of the
    statements above is written down once. `args` and `returns` are spelled the way
    PostgreSQL prints them (`oidvectortypes(proargtypes)`, `pg_get_function_result(oid)`).
    `for_applications`: granted to an application role by `pgcounter.grant_usage`.
    """

    name: str
    args: str
    returns: str
    security_definer: bool
    for_applications: bool

    @property
    def signature(self) -> str:
        return f"{self.name}({self.args})"


SCHEMA: Final = "pgcounter"
# What every function pins with `SET search_path = …`; what makes SECURITY DEFINER safe.
PINNED_SEARCH_PATH: Final = ("pg_catalog", "pg_temp")

FUNCTIONS: Final[tuple[Function, ...]] = (
    Function("increment_project_counter", "bigint, bigint", "bigint", True, True),
    Function("current_project_counter", "bigint", "bigint", True, True),
    Function(
        "increment_project_counters",
        "bigint[], bigint[]",
        "TABLE(project_id bigint, value bigint)",
        True,
        True,
    ),
    Function("ensure_project_counter_at_least", "bigint, bigint", "bigint", True, False),
    Function("ensure_project_counters", "bigint[], bigint[]", "integer", True, False),
    # Invoker: it grants with the rights of whoever calls it, which must be the owner.
    Function("grant_usage", "regrole", "void", False, False),
)
