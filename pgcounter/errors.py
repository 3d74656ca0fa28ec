"""The exceptions pgcounter raises of its own; database errors stay psycopg's."""

from __future__ import annotations


class CounterError(Exception):
    """Base of every error pgcounter raises of its own."""


class ConfigurationError(CounterError):
    """pgcounter was not told enough to run (no DSN, no embedded server available)."""


class CounterNotInstalledError(CounterError):
    """The database has no pgcounter bundle: run `pgcounter migrate` against it."""


class CounterTimeoutError(CounterError):
    """Every attempt of an increment ran into the statement timeout.

    The last psycopg error (a `QueryCanceled`) is the `__cause__`.
    """

    def __init__(self, project_id: int, attempts: int) -> None:
        super().__init__(
            f"pgcounter: increment of project {project_id} timed out on all {attempts} attempts"
        )
        self.project_id = project_id
        self.attempts = attempts
