"""Where the SQL bundle and the alembic scripts are, in a checkout and in an installed wheel.

They are written once, at the top of the repository (`sql/`, `alembic/`); the wheel carries
them inside the package as `pgcounter/_bundle/`. Code asks here instead of guessing paths.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundle_root() -> Path:
    """The folder that holds `sql/` and `alembic/`: the wheel's copy first, else the checkout."""
    for root in (_PACKAGE_DIR / "_bundle", _PACKAGE_DIR.parent):
        if (root / "sql" / "functions.sql").is_file() and (root / "alembic" / "env.py").is_file():
            return root
    raise FileNotFoundError(
        f"pgcounter: the SQL bundle is missing next to {_PACKAGE_DIR} (a broken install?)"
    )


def sql_dir() -> Path:
    return bundle_root() / "sql"


def alembic_dir() -> Path:
    return bundle_root() / "alembic"


def read_sql(name: str) -> str:
    """The text of one bundle file, e.g. `read_sql("functions.sql")`."""
    return (sql_dir() / name).read_text(encoding="utf-8")
