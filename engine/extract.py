"""Preprocessing: run a frozen front end once over a partition and write its resumable feature store
(`data.store`), reading audio ahead in threads; what preprocess.py does for each partition."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data.audio import load_audio
from data.corpora import Corpus, get_corpus
from data.store import FeatureStore, ShardWriter, store_dir
from models.frontends import FrontEnd
from utils.errors import UserError


def _load(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(wave, None) or (None, one-line error naming the file)."""
    try:
        return load_audio(path), None
    except UserError as exc:
        return None, " ".join(str(exc).split())
    except (ValueError, RuntimeError, OSError) as exc:  # anything else the decoder or resampler raises
        return None, f"{path}: cannot read audio ({type(exc).__name__}: {' '.join(str(exc).split())})"


def iter_loaded(
    blocks: Sequence[np.ndarray], paths: Sequence[Path], workers: int, ahead: int = 2
) -> Iterator[tuple[np.ndarray, list[tuple[np.ndarray | None, str | None]]]]:
    """Yield (rows, [(wave, error), ...]) per block; workers threads read ahead blocks early."""
    if workers <= 0:
        for rows in blocks:
            yield rows, [_load(paths[r]) for r in rows]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load_audio")
    queue: deque[tuple[np.ndarray, list[Future]]] = deque()
    todo = iter(blocks)
    try:
        for rows in todo:
            queue.append((rows, [pool.submit(_load, paths[r]) for r in rows]))
            if len(queue) > ahead:
                done_rows, futures = queue.popleft()
                yield done_rows, [f.result() for f in futures]
        while queue:
            done_rows, futures = queue.popleft()
            yield done_rows, [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def compute_block(
    writer, frontend, block: np.ndarray, loaded: list, paths: Sequence[Path], skip_bad: bool
) -> int:
    """Features of one block of rows into the store; returns how many rows were computed.

    Unreadable audio (or non-finite features) stops the run with its one-line error, or with
    ``skip_bad`` is marked bad in the store; rows committed before stay committed.
    """
    bad: dict[int, tuple[str, str]] = {}
    good: list[int] = []
    waves: list[np.ndarray] = []
    for row, (wave, error) in zip(block.tolist(), loaded, strict=True):
        if error is None:
            good.append(row)
            waves.append(wave)
        elif skip_bad:
            bad[row] = (str(paths[row]), error)
        else:
            raise UserError(error)
    feats, finite = _finite_features(frontend, waves, writer.variable_axis is not None)
    for row in np.asarray(good, dtype=np.int64)[~finite].tolist():
        error = f"{paths[row]}: the front end produced NaN/inf features"
        if not skip_bad:
            raise UserError(error)
        bad[row] = (str(paths[row]), error)
    if isinstance(feats, np.ndarray):
        kept = feats[finite]
    else:
        kept = [f for f, ok in zip(feats, finite, strict=True) if ok]
    writer.commit(np.asarray(good, dtype=np.int64)[finite], kept, bad)
    return int(finite.sum())


def _finite_features(frontend: FrontEnd, waves: list[np.ndarray], variable: bool) -> tuple[Any, np.ndarray]:
    """The front end's features of ``waves`` (an array (B, *feature_shape), or a list of B arrays when the
    shape has a variable axis) and which of them are finite, (B,) bool."""
    if variable:
        feats = list(frontend.extract(waves)) if waves else []
        return feats, np.array([np.isfinite(f).all() for f in feats], dtype=bool)
    feats = frontend.extract(waves) if waves else np.empty((0, *frontend.feature_shape), np.float32)
    return feats, np.isfinite(feats).all(axis=tuple(range(1, feats.ndim)))


def extract_partition(
    frontend: FrontEnd,
    data_root: str | os.PathLike,
    partition: str,
    corpus: Corpus | str,
    out: str | os.PathLike,
    *,
    shard: int = 0,
    n_shards: int = 1,
    limit: int | None = None,
    retry_bad: bool = False,
    skip_bad: bool = False,
    batch_size: int = 16,
    num_workers: int = 2,
    progress: bool = True,
    pause: float = 0.0,
) -> None:
    """Run ``frontend`` once over this process's shard of ``partition`` of ``corpus`` (a `data.corpora`
    corpus or its name) and write its store under ``out`` (resumable: rows committed by an earlier run are
    kept); prints a one-line summary.

    ``limit``: only the first rows of the protocol; ``skip_bad``: unreadable audio is marked bad and
    listed instead of stopping; ``retry_bad``: compute rows marked bad before again; ``num_workers``
    threads read audio ahead; ``pause``: seconds to wait after each committed block (tests).
    """
    corpus = get_corpus(corpus)
    # with skip_bad a missing or empty file is one bad row, not the end of the run (manifests check up front)
    rows = corpus.read(data_root, partition, check_audio=not skip_bad)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise UserError(f"{data_root}: the {corpus.name} {partition} protocol has no rows")
    settings = frontend.settings()
    target = store_dir(out, frontend.store_tag(settings), corpus.store_name(partition))
    writer = ShardWriter(
        target,
        [(r.utt_id, r.speaker, r.attack, r.key) for r in rows],
        settings,
        frontend.feature_shape,
        frontend.store_dtype,
        shard,
        n_shards,
    )
    paths = [Path(r.path) for r in rows]
    if retry_bad:
        print(f"{partition}: retrying {writer.retry_bad()} row(s) marked bad")
    already = writer.n_done + writer.n_bad
    computed = 0
    started = time.perf_counter()
    desc = partition if n_shards == 1 else f"{partition} {shard}/{n_shards}"
    bar = tqdm(total=writer.stop - writer.start, initial=already, desc=desc, unit="utt", dynamic_ncols=True,
               disable=not progress, file=sys.stderr)
    blocks = writer.pending_blocks(batch_size)
    # closing(): stop the reader threads at once if a bad file ends the run
    with bar, contextlib.closing(iter_loaded(blocks, paths, num_workers)) as batches:
        for block, loaded in batches:
            computed += compute_block(writer, frontend, block, loaded, paths, skip_bad)
            bar.update(len(block))
            if pause:
                time.sleep(pause)
    elapsed = time.perf_counter() - started
    store = FeatureStore(target, allow_partial=True)
    state = "complete" if store.complete else "incomplete (other shards still running or not started)"
    print(
        f"{desc}: {writer.stop - writer.start} rows ({already} already done, {computed} computed, "
        f"{writer.n_bad} bad) in {elapsed:.1f} s ({computed / max(elapsed, 1e-9):.1f} utt/s); "
        f"store {target} {state}, {store.nbytes_on_disk() / 2**20:.1f} MiB on disk"
    )
    if writer.n_bad:
        print(f"{desc}: {writer.n_bad} bad file(s) listed in {writer.bad_path}")
