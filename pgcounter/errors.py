"""The exceptions pgcounter raises of its own; database errors stay psycopg's."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's often span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


class CounterError(Exception):
    """Base of every error pgcounter raises of its own."""


class ConfigurationError(CounterError):
    """pgcounter was not told enough to run (no DSN, no embedded server available)."""


class CounterNotInstalledError(CounterError):
    """The database has no pgcounter bundle: run `pgcounter migrate` against it."""


class CounterTimeoutError(CounterError):
    """An increment ran out of time: its attempts timed out (statement or lock timeout)
    until the retries or the deadline were used up, or no pooled connection came free
    before the deadline.

    The last error (`QueryCanceled`, `LockNotAvailable` or `PoolTimeout`) is `__cause__`.
    """

    def __init__(self, project_id: int, attempts: int, project_ids: tuple[int, ...] = ()) -> None:
        what = f"{len(project_ids)} projects" if len(project_ids) > 1 else f"project {project_id}"
        super().__init__(f"pgcounter: increment of {what} timed out ({attempts} attempts)")
        self.project_id = project_id
        self.project_ids = project_ids or (project_id,)
        self.attempts = attempts
