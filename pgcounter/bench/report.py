"""Turning bench results into ratios, a table, JSON and a chart."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgcounter.bench.runner import Result

REFERENCE_ORDER = ("coalesced", "plain", "blocks")


def add_ratios(results: Sequence[Result]) -> None:
    """Each result's throughput over pgcounter's (coalesced, else plain) on the same workload."""
    groups: dict[tuple[Any, ...], list[Result]] = {}
    for result in results:
        key = (result.workers, result.projects, result.distribution)
        groups.setdefault(key, []).append(result)
    for group in groups.values():
        by_name = {r.contender: r for r in group if r.is_pgcounter}
        reference = next((by_name[n] for n in REFERENCE_ORDER if n in by_name), None)
        for result in group:
            if reference is not None and reference.ops_per_s > 0:
                result.ratio = round(result.ops_per_s / reference.ops_per_s, 3)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: Sequence[Result]) -> str:
    header = (
        f"{'contender':<11} {'workers':>7} {'ops/s':>12} {'x pgc':>7} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'retries':>7} {'timeouts':>8} "
        f"{'errors':>6} {'dups':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lat = r.latency_ms
        p50 = lat.get("p50") if lat.get("p50") is not None else lat.get("avg")
        lines.append(
            f"{r.contender:<11} {r.workers:>7} {r.ops_per_s:>12,.0f} "
            f"{'-' if r.ratio is None else f'{r.ratio:.2f}':>7} {_ms(p50):>8} "
            f"{_ms(lat.get('p95')):>8} {_ms(lat.get('p99')):>8} {_ms(lat.get('max')):>8} "
            f"{'-' if r.retries is None else r.retries:>7} {r.timeouts:>8} {r.errors:>6} "
            f"{'-' if r.duplicates is None else r.duplicates:>5}"
        )
        if r.first_error:
            lines.append(f"    first error: {r.first_error}")
    return "\n".join(lines)


def machine(server_version: str) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "postgresql": server_version,
    }


def chart(results: Sequence[Result], path: Path, title: str) -> None:
    """Throughput against workers, one line per contender (needs matplotlib: extra `bench`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    names = list(dict.fromkeys(r.contender for r in results))
    for name in names:
        points = sorted((r.workers, r.ops_per_s) for r in results if r.contender == name)
        if points:
            axes.plot([w for w, _ in points], [ops for _, ops in points], marker="o", label=name)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("workers")
    axes.set_ylabel("increments per second (log)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
