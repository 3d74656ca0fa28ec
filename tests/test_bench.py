"""`pgcounter bench`: its parts, and a short real run against the test database."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgcounter.bench.report import add_ratios
from pgcounter.bench.runner import Result, find_pgbench, percentiles
from pgcounter.bench.workload import Workload
from pgcounter.cli import cli


def test_workload_pickers() -> None:
    hot = Workload(4, 100, "hot", 1).picker(0, 1000)
    assert {hot() for _ in range(100)} == {1000}
    uniform = Workload(4, 10, "uniform", 1).picker(0, 1000)
    assert {uniform() for _ in range(2000)} == set(range(1000, 1010))
    skewed = Workload(4, 50, "skewed", 1).picker(0, 0)
    counts = Counter(skewed() for _ in range(20000))
    assert set(counts) <= set(range(50))
    assert counts[0] > counts[1] > counts[10] > 0  # the head is hot, the tail is not empty


def test_percentiles() -> None:
    latencies = array("d", [i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert percentiles(latencies) == {"p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
    assert percentiles(array("d"))["p99"] is None


def _result(name: str, ops: float, workers: int = 1, pgc: bool = False) -> Result:
    return Result(name, pgc, workers, 1, "hot", False, 1.0, int(ops), ops, {}, None, 0, 0, 0)


def test_ratios_are_against_coalesced_pgcounter_on_the_same_workload() -> None:
    results = [
        _result("plain", 100, pgc=True),
        _result("coalesced", 200, pgc=True),
        _result("original", 50),
        _result("original", 30, workers=8),
        _result("plain", 60, workers=8, pgc=True),
    ]
    add_ratios(results)
    assert [r.ratio for r in results] == [0.5, 1.0, 0.25, 0.5, 1.0]


@pytest.mark.slow
def test_a_short_real_run(dsn: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs the extra 'bench'")
    chart = tmp_path / "chart.png"
    alternatives = "original,for_update" + (",pgbench" if find_pgbench() else "")
    result = CliRunner().invoke(
        cli,
        [
            "--dsn", dsn, "bench", "--workers", "1,4", "--duration", "0.5",
            "--alternatives", alternatives, "--json", "--chart", str(chart),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["machine"]["postgresql"]
    names = {(r["contender"], r["workers"]) for r in report["results"]}
    expected = {"plain", "coalesced", "batched", "blocks", *alternatives.split(",")}
    assert names == {(n, w) for n in expected for w in (1, 4)}
    for r in report["results"]:
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        assert r["timeouts"] == 0, r
        assert r["duplicates"] in (0, None), r
        assert r["ratio"] is not None
    coalesced = [r for r in report["results"] if r["contender"] == "coalesced"]
    assert all(r["ratio"] == 1.0 for r in coalesced)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with psycopg.connect(dsn) as conn:  # nothing left behind
        assert conn.execute("SELECT to_regnamespace('pgcounter_bench')").fetchone() == (None,)
        leftover = conn.execute(
            "SELECT count(*) FROM pgcounter.project_counter WHERE project_id >= 9000000000000000000"
        ).fetchone()
        assert leftover == (0,)


@pytest.mark.slow
def test_async_run_and_the_table(dsn: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "--dsn", dsn, "bench", "--workers", "8", "--duration", "0.5", "--async",
            "--mode", "plain,coalesced", "--alternatives", "none",
            "--distribution", "uniform", "--projects", "50",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "8 tasks, 50 projects, uniform" in result.stdout.replace("N tasks", "8 tasks")
    assert "verified: no number handed out twice" in result.stdout
    assert "coalesced" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--workers", "0"], "each at least 1"),
        (["--workers", "a,b"], "not a comma-separated list"),
        (["--mode", "turbo"], "choose from plain, coalesced, batched, blocks"),
        (["--alternatives", "redis"], "choose from original, for_update, pgbench"),
    ],
)
def test_bad_bench_options_are_one_line(dsn: str, args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(cli, ["--dsn", dsn, "bench", *args])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert fragment in result.stderr
