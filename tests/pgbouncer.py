"""A throwaway PgBouncer in front of the test database, started and stopped by the test.

Transaction pooling with a tiny server pool, so that the clients of a test really share one
server connection: that is where a session setting or a named prepared statement would leak
from one client into the next. PgBouncer refuses to run as root, so as root it runs as an
unprivileged system user through runuser (as own_server.py does for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PGBOUNCER_ENV = "PGCOUNTER_TEST_PGBOUNCER_BIN"
START_TIMEOUT_S = 15.0
QUERY_WAIT_TIMEOUT_S = 10


def find_pgbouncer() -> str | None:
    """$PGCOUNTER_TEST_PGBOUNCER_BIN, else `pgbouncer` on PATH, else Debian's one."""
    for candidate in (os.environ.get(PGBOUNCER_ENV), shutil.which("pgbouncer")):
        if candidate and Path(candidate).is_file():
            return candidate
    debian = Path("/usr/sbin/pgbouncer")
    return str(debian) if debian.is_file() else None


def version(binary: str) -> tuple[int, ...]:
    """PgBouncer's version, from `pgbouncer --version` ("PgBouncer 1.18.0" on its first line)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"PgBouncer (\d+(?:\.\d+)*)", out.stdout)
    if found is None:
        raise RuntimeError(f"cannot tell the version of {binary}: {out.stdout!r}")
    return tuple(int(part) for part in found.group(1).split("."))


def why_unavailable() -> str | None:
    """Why PgBouncer cannot be started here, or None when it can."""
    if find_pgbouncer() is None:
        return f"no pgbouncer binary (install Debian's pgbouncer or set {PGBOUNCER_ENV})"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start pgbouncer as another user"
    return None


def _run_as(backend_host: str) -> str | None:
    """The user to run PgBouncer as: None (ourselves) unless we are root.

    A backend reached over a Unix socket (the embedded server) is reached as the owner of
    the socket's folder: the server keeps it private to its own user. Otherwise `postgres`.
    """
    if os.geteuid() != 0:
        return None
    if backend_host.startswith("/"):
        owner = pwd.getpwuid(Path(backend_host).stat().st_uid).pw_name
        if owner != "root":
            return owner
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise RuntimeError("running as root and no unprivileged user to run pgbouncer as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plain(name: str, value: str) -> str:
    """A value written into pgbouncer.ini as it is: the test's own names need no quoting."""
    if not re.fullmatch(r"[\w/.-]+", value):
        raise ValueError(f"{name} {value!r} needs quoting in pgbouncer.ini; not supported here")
    return value


class PgBouncer:
    """PgBouncer on a free 127.0.0.1 port, forwarding to `backend_dsn`'s database.

    `pool_size` server connections at most (PgBouncer's default_pool_size), in transaction
    pooling: a server connection goes back to the pool at the end of every transaction.
    Clients log in as the backend's user without a password (auth_type trust), and
    PgBouncer logs in to the backend as that same user. `settings` go into the [pgbouncer]
    section as they are, last.
    """

    def __init__(
        self, backend_dsn: str, *, pool_size: int = 1, settings: Mapping[str, object] | None = None
    ) -> None:
        binary = find_pgbouncer()
        assert binary is not None, why_unavailable()
        self.version = version(binary)
        backend = conninfo_to_dict(backend_dsn)
        if backend.get("password"):
            raise ValueError("PgBouncer here logs in with trust: the backend must need no password")
        self.dbname = str(backend.get("dbname") or "postgres")
        self.user = str(backend.get("user") or "postgres")
        host = str(backend.get("host") or "127.0.0.1")
        self._server = (
            f"host={_plain('host', host)} port={_plain('port', str(backend.get('port') or 5432))} "
            f"dbname={_plain('dbname', self.dbname)} user={_plain('user', self.user)}"
        )
        self._pool_size = pool_size
        self._settings = "".join(f"{key} = {value}\n" for key, value in (settings or {}).items())
        self.root = Path(tempfile.mkdtemp(prefix="pgcounter-pgbouncer-"))
        self.log = self.root / "pgbouncer.log"  # what it prints: it logs to stderr
        self.pidfile = self.root / "pgbouncer.pid"
        self.port = 0
        # trust: no password is checked, but the user must be listed.
        (self.root / "users.txt").write_text(f'"{self.user}" ""\n')
        command = [binary, str(self.root / "pgbouncer.ini")]
        self._run_as = _run_as(host)
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        try:
            for _ in range(3):  # the free port may be taken before PgBouncer binds it
                if self._start(command):
                    return
            raise RuntimeError(f"pgbouncer found no free port:\n{self.output()}")
        except BaseException:
            self.stop()
            raise

    def _start(self, command: list[str]) -> bool:
        """Start on a fresh free port; False when that port was taken meanwhile."""
        self.port = _free_port()
        self.pidfile.unlink(missing_ok=True)  # only ever the pid of the PgBouncer started here
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.dbname} = {self._server}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self._pool_size}\n"
            "max_client_conn = 200\n"
            # A client that waits this long for a server connection is stuck: fail the
            # test within seconds, not after PgBouncer's default of two minutes.
            f"query_wait_timeout = {QUERY_WAIT_TIMEOUT_S}\n"
            f"pidfile = {self.pidfile}\n"
            # 1.21 and later can track named prepared statements; these tests run
            # PgBouncer the way 1.18 always runs, without.
            + ("max_prepared_statements = 0\n" if self.version >= (1, 21) else "")
            + self._settings
        )
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        return self._wait_until_ready()

    @property
    def dsn(self) -> str:
        """The test database, through PgBouncer."""
        return make_conninfo(host="127.0.0.1", port=self.port, user=self.user, dbname=self.dbname)

    def output(self) -> str:
        """PgBouncer's log, for failure messages."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _wait_until_ready(self) -> bool:
        """Until a query goes through PgBouncer to the backend and back (True), or PgBouncer
        exited because its port was taken (False)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                if "Address already in use" in self.output():
                    self.log.write_text("")
                    return False
                raise RuntimeError(f"pgbouncer exited at start:\n{self.output()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not come up:\n{self.output()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM: immediate shutdown) and delete its folder.

        The signal goes to PgBouncer itself, by the pid it wrote: runuser, our child, would
        pass a SIGTERM on too, but only SIGKILLs it two seconds later; it exits as soon as
        PgBouncer does.
        """
        try:
            process = getattr(self, "_process", None)
            if process is not None and process.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    process.wait(timeout=10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _signal(self, signum: signal.Signals) -> None:
        """Signal PgBouncer: our child, or runuser's by the pid in its pidfile."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and self._run_as is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if pid is None or self._run_as is None or signum == signal.SIGKILL:
            self._process.send_signal(signum)  # PgBouncer itself, or runuser

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
