"""Scoring a partition into a score file the way generate_score.py does: batch by batch, each batch's rows
appended to ``OUTPUT.partial`` (`utils.partialscores`) as soon as it is scored, so that a killed run
continues where it stopped (``resume``), and optionally over torchrun processes.

Batches are cut the same way in every run: batch i holds the utterances i·B … i·B + B − 1 of the protocol
(B = the batch size). A resumed run starts at the first batch not complete in the partial file, and
torchrun's W processes take the remaining batches in turn (rank r the r-th, (r + W)-th, ...), so every
batch, and with it every float the model computes, is the one an uninterrupted single-process run
computes. Rank 0 gathers the batches after each round, appends them in protocol order, and at the end
writes OUTPUT atomically and deletes the partial file: the same bytes whichever way the file was made.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from data.dataset import collate_batch
from engine.score_batches import Scores, cm_keys, concat_scores, iter_scored_batches, write_partition_scores
from engine.scorer import Scorer, open_scored_partition, scoring_batch_size, scoring_settings, to_llr
from utils import distributed as du
from utils.errors import UserError, where
from utils.partialscores import PartialScores, ScoreRows, partial_path

T = TypeVar("T")


def score_partition_file(
    scorer: Scorer, partition: str, output: str | os.PathLike, *, fmt: str = "id-attack-key-score",
    llr: bool = False, resume: bool = False, features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, dataset: str | None = None,
    manifests: Mapping[str, str] | None = None, crop: str | None = None, num_workers: int = 0,
    progress: bool = True, throttle: float = 0.0,
) -> tuple[Scores | None, int]:
    """Score ``partition`` (`engine.scorer.open_scored_partition`) into the score file ``output`` in
    ``fmt`` (`engine.score_batches.write_partition_scores`; calibrated LLRs with ``llr``).

    ``resume``: continue from ``OUTPUT.partial`` left by a killed run with the same settings (others:
    `UserError`); without it an existing partial file is a `UserError`. Under torchrun every rank calls
    this. ``throttle``: seconds to pause after each round of batches (tests use it to kill a run midway).
    ``crop``: as in `open_scored_partition` (whole utterances: one per batch).
    Returns (the scores written, on rank 0; None on the other ranks, number of utterances resumed)."""
    data = open_scored_partition(scorer, partition, features=features, data_root=data_root, dataset=dataset,
                                 manifests=manifests, crop=crop)
    size = scoring_batch_size(scorer, data)
    utt_ids = [row.utt_id for row in data.rows]
    settings = {"partition": partition, "features": _absolute(features), "data_root": _absolute(data_root),
                "dataset": dataset, "format": fmt, "llr": llr,
                **({"manifests": dict(manifests)} if manifests else {})}
    if getattr(data, "crop", None) == "full":  # recorded only then: partial files of first crops still resume
        settings["crop"] = "full"
    opened: list[PartialScores] = []

    def open_partial() -> int:
        partial = PartialScores(partial_path(output), {**settings, **scoring_settings(scorer)}, resume=resume)
        keep = _whole_batches(partial, utt_ids, size)
        partial.start(keep)
        opened.append(partial)
        return keep

    resumed = _on_main(open_partial)
    partial = opened[0] if opened else None
    if partial is not None:
        scorer.announce()
    try:
        new = _score_batches(scorer, data, size, resumed, partial, progress=progress, num_workers=num_workers,
                             throttle=throttle, desc=f"score {partition}")
    finally:
        if partial is not None:
            partial.close()
    if partial is None:
        return None, resumed
    scores = concat_scores([_as_scores(partial.done), *new])
    if llr:
        scores = to_llr(scorer, scores)
    write_partition_scores(scores, output, fmt)
    partial.remove()
    return scores, resumed


def _score_batches(
    scorer: Scorer, data: Dataset, size: int, start: int, partial: PartialScores | None, *, progress: bool,
    num_workers: int, throttle: float, desc: str,
) -> list[Scores]:
    """Score the batches of ``size`` utterances from utterance ``start`` on, this rank's share; rank 0
    (``partial`` given) appends every rank's batches to ``partial`` in protocol order and returns them."""
    rank, world = du.rank_and_size()
    n = len(data)
    todo = range(start // size, math.ceil(n / size))  # ``start``: a multiple of ``size``, or n
    mine = [list(range(i * size, min(n, (i + 1) * size))) for i in todo[rank::world]]
    loader = DataLoader(data, batch_sampler=mine, num_workers=num_workers, collate_fn=collate_batch)
    batches = iter_scored_batches(scorer.model, scorer.loss_fn, loader, scorer.device, amp=scorer.amp,
                                  channels_last=True, fixed_batch=scorer.fixed_batch)
    bar = tqdm(total=n, initial=start, unit="rows", desc=desc, disable=not (progress and partial is not None),
               leave=False, dynamic_ncols=True)
    new: list[Scores] = []
    for _ in range(math.ceil(len(todo) / world)):  # rounds: one batch per rank (the last may have fewer)
        for part in du.all_gather_objects(next(batches, None)):  # in rank order = protocol order
            if part is not None and partial is not None:
                partial.append(ScoreRows(part.utt_ids, part.attacks, cm_keys(part.labels), part.scores))
                new.append(part)
                bar.update(len(part.utt_ids))
        if throttle > 0:
            time.sleep(throttle)
    bar.close()
    return new


def _whole_batches(partial: PartialScores, utt_ids: list[str], batch_size: int) -> int:
    """How many of ``partial``'s rows to keep: whole batches, checked against the partition's utt_ids
    (a changed protocol is a `UserError`); all of them when the partition is complete."""
    done = partial.done.utt_ids
    if len(done) > len(utt_ids):
        raise UserError(f"{partial.path}: {len(done)} rows, but the partition has {len(utt_ids)} utterances; "
                        "delete it to start over")
    k = next((k for k, (got, want) in enumerate(zip(done, utt_ids, strict=False)) if got != want), None)
    if k is not None:
        raise UserError(f"{where(partial.path, k + 2)}: utt_id {done[k]}, but the partition has {utt_ids[k]} "
                        "there (the protocol changed?); delete the file to start over")
    return len(done) if len(done) == len(utt_ids) else len(done) - len(done) % batch_size


def _on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 alone, its result (or its `UserError`, raised on every rank) shared with all."""
    result, error = None, None
    if du.rank_and_size()[0] == 0:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
    result, error = du.all_gather_objects((result, error))[0]
    if error is not None:
        raise UserError(error)
    return result


def _as_scores(rows: ScoreRows) -> Scores:
    labels = np.array([0 if key == "bonafide" else 1 for key in rows.keys], dtype=np.int64)
    return Scores(rows.utt_ids, rows.attacks, labels, np.asarray(rows.scores, dtype=np.float64))


def _absolute(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).resolve())

