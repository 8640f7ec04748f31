"""Independent pieces of CPU work spread over forked processes.

The evaluator's per-cell tables are many numpy calls on arrays of a few thousand values: threads would
take turns holding the GIL, so a second core is used through `os.fork` instead. The children read the
parent's arrays copy-on-write (nothing is pickled on the way in) and send their results back as JSON,
which carries floats exactly (shortest round-trip repr). Off Linux (`fork_workers`), with one usable CPU,
or where a child fails, the work runs in this process alone, giving the same values.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def fork_workers(limit: int = 2) -> int:
    """The processes `fork_map` may use here: up to ``limit`` on Linux, 1 with one usable CPU or elsewhere
    (Windows has no fork; on macOS system libraries such as Accelerate, numpy's BLAS there, are not safe
    to use in a forked child)."""
    if not sys.platform.startswith("linux"):
        return 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(limit, usable))


def split_by_weight(weights: Sequence[float], parts: int) -> list[range]:
    """Consecutive index ranges of ``weights`` (n,), at most ``parts`` of them, each non-empty, cut where the
    running total comes closest to an equal share."""
    running = [0.0]
    for w in weights:
        running.append(running[-1] + float(w))
    bounds = [0]
    for j in range(1, parts):
        share = running[-1] * j / parts
        cut = min(range(bounds[-1] + 1, len(weights)), key=lambda i: abs(running[i] - share), default=None)
        if cut is not None:
            bounds.append(cut)
    bounds.append(len(weights))
    return [range(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def fork_map(
    fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1, weights: Sequence[float] | None = None
) -> list[Any]:
    """``[fn(job) for job in jobs]``, the jobs split into ``workers`` consecutive groups of about equal
    ``weights`` (default: equal), every group but the first run in a forked child. ``fn``'s results must
    be JSON values (dicts, lists, floats, None, ...). A child that fails has its group run again here, so
    an exception ``fn`` raises surfaces in this process, as without workers."""
    groups = split_by_weight(weights if weights is not None else [1.0] * len(jobs), max(1, workers))
    if len(groups) < 2 or not hasattr(os, "fork"):
        return [fn(job) for job in jobs]
    children = [(_fork(fn, [jobs[i] for i in group]), group) for group in groups[1:]]
    results: list[Any] = []
    try:
        results += [fn(jobs[i]) for i in groups[0]]
    finally:
        received = [(_collect(*child), group) for child, group in children]
    for got, group in received:
        results += got if got is not None else [fn(jobs[i]) for i in group]
    return results


def _fork(fn: Callable[[Any], Any], jobs: list[Any]) -> tuple[int, int]:
    """(pid, read end of its pipe) of a child computing ``[fn(job) for job in jobs]``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, never runs the parent's exit handlers or flushes its buffers
        code = 1
        try:
            os.close(read_end)
            data = json.dumps([fn(job) for job in jobs]).encode()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _collect(pid: int, read_end: int) -> list[Any] | None:
    """The results a child sent, None when it failed."""
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
