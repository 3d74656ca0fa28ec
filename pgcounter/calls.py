"""The statements the clients send. They only call the bundle's functions (sql/functions.sql);
the tables and function bodies are never repeated in Python."""

from __future__ import annotations

from typing import Final, LiteralString

# Scoped like SET LOCAL: the value ends with the transaction, whatever happens to it.
# (SET LOCAL itself cannot take a bind parameter; set_config can.)
SET_LOCAL_STATEMENT_TIMEOUT: Final[LiteralString] = (
    "SELECT set_config('statement_timeout', %s, true)"
)
INCREMENT: Final[LiteralString] = "SELECT pgcounter.increment_project_counter(%s, %s)"
CURRENT: Final[LiteralString] = "SELECT pgcounter.current_project_counter(%s)"
# Explicit: a database whose default isolation is REPEATABLE READ or SERIALIZABLE would turn
# every concurrent increment of a project into a serialization failure.
BEGIN: Final[LiteralString] = "BEGIN ISOLATION LEVEL READ COMMITTED"
COMMIT: Final[LiteralString] = "COMMIT"
ROLLBACK: Final[LiteralString] = "ROLLBACK"
