"""Which project each increment goes to."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

DISTRIBUTIONS = ("hot", "uniform", "skewed")


@dataclass(frozen=True)
class Workload:
    workers: int
    projects: int
    distribution: str
    duration_s: float
    use_async: bool = False

    def describe(self) -> str:
        spread = (
            "one hot project"
            if self.distribution == "hot"
            else (f"{self.projects} projects, {self.distribution}")
        )
        kind = "tasks" if self.use_async else "threads"
        return f"{self.workers} {kind}, {spread}, {self.duration_s:g} s"

    def picker(self, seed: int, base: int) -> Callable[[], int]:
        """A per-worker project chooser; ids start at `base` so runs never share counters."""
        rng = random.Random(seed)  # noqa: S311 (a workload, not a secret)
        if self.distribution == "hot" or self.projects == 1:
            return lambda: base
        if self.distribution == "uniform":
            n = self.projects
            return lambda: base + int(rng.random() * n)
        # skewed: Zipf-like (s = 1.1), the first projects much hotter than the tail
        weights = [1.0 / (rank**1.1) for rank in range(1, self.projects + 1)]
        cumulative = list(itertools.accumulate(weights))
        total = cumulative[-1]
        return lambda: base + bisect.bisect_left(cumulative, rng.random() * total)
