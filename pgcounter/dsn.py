"""Showing which database is in use without ever showing its password."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

_SHOWN = ("host", "hostaddr", "port", "dbname", "user")


def describe_dsn(dsn: str) -> str:
    """`host=… port=… dbname=… user=…` of a libpq DSN; passwords and other secrets dropped."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    shown = [f"{key}={params[key]}" for key in _SHOWN if params.get(key) not in (None, "")]
    return " ".join(shown) if shown else "<libpq defaults>"
