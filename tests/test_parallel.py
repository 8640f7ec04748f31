"""utils.parallel: forked workers give what one process gives, in order, and fall back when a child fails."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from utils.parallel import fork_map, fork_workers, split_by_weight

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_split_by_weight_keeps_order_and_balances() -> None:
    assert split_by_weight([1, 1, 1, 1], 2) == [range(0, 2), range(2, 4)]
    assert split_by_weight([10, 1, 1, 1, 1], 2) == [range(0, 1), range(1, 5)]
    assert split_by_weight([1, 1, 1, 10], 2) == [range(0, 3), range(3, 4)]
    assert split_by_weight([5], 4) == [range(0, 1)]
    assert split_by_weight([], 2) == []


@needs_fork
def test_fork_map_equals_map_with_exact_floats() -> None:
    rng = np.random.default_rng(0)
    jobs = [rng.normal(size=int(n)) for n in rng.integers(1, 50, 9)]

    def measure(x: np.ndarray) -> dict:
        return {"mean": float(x.mean()), "log": float(np.log(np.abs(x).sum())), "none": None}

    expected = [measure(x) for x in jobs]
    for workers in (1, 2, 3):
        assert fork_map(measure, jobs, workers, weights=[x.size for x in jobs]) == expected


@needs_fork
def test_fork_map_runs_a_failed_group_here() -> None:
    parent = os.getpid()

    def only_in_parent(x: int) -> int:
        if os.getpid() != parent:
            raise RuntimeError("a child that fails")
        return x * x

    assert fork_map(only_in_parent, list(range(6)), 2) == [x * x for x in range(6)]

    def fails(x: int) -> int:
        raise ValueError(f"bad job {x}")

    with pytest.raises(ValueError, match="bad job 0"):
        fork_map(fails, [0, 1], 2)


def test_fork_workers_only_on_linux_with_cpus_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform.startswith("linux"):
        assert fork_workers() == min(2, len(os.sched_getaffinity(0)))
        assert fork_workers(limit=1) == 1
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert fork_workers() == 1
    monkeypatch.setattr(sys, "platform", "darwin")
    assert fork_workers() == 1
