"""BlockCounter: numbers from pre-allocated blocks, unique across threads and processes."""

from __future__ import annotations

import threading

import pytest

from pgcounter import ProjectCounter
from pgcounter.blocks import BlockCounter
from tests.conftest import RecordingMetrics


def test_numbers_are_unique_across_threads_and_counters(
    dsn: str, metrics: RecordingMetrics
) -> None:
    """Two BlockCounters (as two processes would have) and eight threads on one project."""
    taken: list[int] = []
    lock = threading.Lock()
    with ProjectCounter(dsn, metrics=metrics) as one, ProjectCounter(dsn) as other:
        blocks = [BlockCounter(one), BlockCounter(other, initial_block=7, max_block=50)]

        def worker(i: int) -> None:
            source = blocks[i % 2]
            mine = [source.next(1) for _ in range(5000)]
            with lock:
                taken.extend(mine)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        final = one.current(1)
    assert len(taken) == 40_000
    assert len(set(taken)) == len(taken), "a number was handed out twice"
    assert max(taken) <= final
    assert final - len(taken) <= 2 * (1000 + 1000)  # unused: at most a block and a spare each
    assert len(metrics.timings) < 100  # blocks grew: far fewer database calls than numbers


def test_blocks_grow_up_to_the_maximum(dsn: str) -> None:
    with ProjectCounter(dsn) as counter:
        blocks = BlockCounter(counter, initial_block=10, max_block=80, low_water=0.0)
        numbers = [blocks.next(2) for _ in range(500)]
        assert numbers == list(range(1, 501))  # one process, one thread: in order, no gap
        reserved = counter.current(2)
    # 10, 20, 40, 80, 80, 80, 80, 80, 80: reserved in growing blocks, the last one partly used
    assert 500 <= reserved <= 500 + 80


def test_projects_are_independent_and_ids_checked(dsn: str) -> None:
    with ProjectCounter(dsn) as counter:
        blocks = BlockCounter(counter)
        assert [blocks.next(1), blocks.next(2), blocks.next(1)] == [1, 1, 2]
        with pytest.raises(TypeError):
            blocks.next("1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_block": 0}, {"initial_block": 10, "max_block": 5}, {"low_water": 1.0}],
)
def test_bad_settings(dsn: str, kwargs: dict[str, float]) -> None:
    with ProjectCounter(dsn) as counter, pytest.raises(ValueError):  # noqa: PT011
        BlockCounter(counter, **kwargs)  # type: ignore[arg-type]


def test_a_forked_child_never_reuses_its_parents_block(dsn: str) -> None:
    import multiprocessing

    with ProjectCounter(dsn) as counter:
        blocks = BlockCounter(counter)
        parent = [blocks.next(5) for _ in range(3)]  # a block of 100 is now reserved
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            child_first = pool.apply(_first_number_in_child, (dsn,))
        assert parent == [1, 2, 3]
        assert child_first > 100  # the child reserved a block of its own
        assert blocks.next(5) == 4  # the parent carries on with its block


def _first_number_in_child(dsn: str) -> int:
    # The pool process was forked after the parent reserved its block; a BlockCounter made
    # before the fork would be inherited, so one is checked through the module's registry.
    from pgcounter import blocks as blocks_module

    inherited = list(blocks_module._instances)
    assert inherited, "the parent's BlockCounter was inherited"
    assert all(not b._projects for b in inherited)  # ...and it forgot its blocks
    with ProjectCounter(dsn, min_size=1, max_size=1) as counter:
        return BlockCounter(counter).next(5)
