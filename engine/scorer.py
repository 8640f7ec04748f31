"""What generate_score.py does, as library calls: load a trained countermeasure once, then score a
partition (feature store or raw audio) or arbitrary recordings with it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from data.dataset import collate_batch
from engine.partitions import check_feature_shape, open_audio_partition, open_store_partition
from engine.score_batches import (
    Scores,
    compile_for_scoring,
    default_batch_size,
    resolve_scoring_amp,
    score_loader,
)
from engine.score_windows import decide, score_audio_files
from engine.scoring_model import load_scoring_model
from models.frontends import build_frontend
from utils.calibration import Calibration
from utils.distributed import place_process
from utils.errors import UserError
from utils.precision import SPELLED


@dataclass
class Scorer:
    """A loaded countermeasure with its scoring settings (``fixed_batch``: the compiled batch size) and the
    checkpoint's score-to-LLR calibration (None if it has none)."""

    model: nn.Module
    loss_fn: nn.Module
    cfg: dict[str, Any]
    threshold: float | None
    device: torch.device
    amp: str
    batch_size: int
    fixed_batch: int | None
    source: str
    calibration: Calibration | None = None
    amp_reason: str = ""
    input_cfg: dict[str, Any] | None = None  # `ScoringModel.input_cfg`: audio -> model input

    def __post_init__(self) -> None:
        if self.input_cfg is None:
            self.input_cfg = self.cfg

    def announce(self) -> None:
        """Print the precision choice and its reason once, when scoring starts."""
        if self.amp_reason:
            print(self.amp_reason, file=sys.stderr)
            self.amp_reason = ""


def load_scorer(
    checkpoint: str | os.PathLike,
    *,
    device: str = "auto",
    amp: str = "auto",
    batch_size: int | None = None,
    compile: bool = False,
    ssl_model: str | None = None,
) -> Scorer:
    """Place this process, load ``checkpoint`` and choose precision, batch size and layout for scoring.

    ``compile``: torch.compile with frozen weights for one batch shape (falls back with a warning)."""
    dev = place_process(device).device
    amp, amp_reason = resolve_scoring_amp(amp, dev)
    batch_size = batch_size or default_batch_size(dev)
    loaded = load_scoring_model(checkpoint, dev, ssl_model=ssl_model)
    # channels_last: the same float32 math, faster convolutions on CPU (bench/bench_train.py)
    model = loaded.model.to(memory_format=torch.channels_last)
    fixed_batch = None
    if compile:
        example = torch.zeros(batch_size, *loaded.input_cfg["model"]["input_shape"], device=dev)
        model, why = compile_for_scoring(model, example.contiguous(memory_format=torch.channels_last), amp)
        if why:
            print(f"warning: torch.compile failed, scoring without it ({why})", file=sys.stderr)
        else:
            fixed_batch = batch_size  # one compiled shape: the last batch is padded
    return Scorer(model, loaded.loss_fn, loaded.cfg, loaded.threshold, dev, amp, batch_size, fixed_batch,
                  str(checkpoint), loaded.calibration, amp_reason, loaded.input_cfg)


def _scoring_cfg(scorer: Scorer) -> dict[str, Any]:
    """The scorer's input recipe, with an SSL front end left at ``dtype: auto`` computing in the scoring
    precision (exact fp32 on CPU by default), so features made on the fly follow ``--amp`` too."""
    cfg = scorer.input_cfg
    frontend = cfg.get("frontend") or {}
    if frontend.get("name") == "ssl" and frontend.get("dtype") in (None, "auto"):
        cfg = {**cfg, "frontend": {**frontend, "dtype": SPELLED[scorer.amp]}}
    return cfg


def require_calibration(scorer: Scorer) -> Calibration:
    """The checkpoint's calibration; `UserError` naming the checkpoint when it has none."""
    if scorer.calibration is None:
        raise UserError(
            f"{scorer.source}: no score calibration stored in this checkpoint, so no LLRs; fit one on its "
            f"dev scores with `python -m engine.calibrate_checkpoint --checkpoint {scorer.source}` "
            "(or train with train.calibrate: true)"
        )
    return scorer.calibration


def score_recordings(
    scorer: Scorer, files: Sequence[Path], *, crop: str = "windows", threshold: float | None = None,
    llr: bool = False, progress: bool = True,
) -> list[dict[str, Any]]:
    """Score audio files (any length, rate, channels) -> one result row per file (file, score, decision,
    threshold, windows, duration_s); decisions at ``threshold`` (None: scores only).

    ``llr``: rows also carry ``llr``, the checkpoint's calibration of the score (`require_calibration`), and
    the decision compares the LLR with ``threshold`` (e.g. `utils.calibration.bayes_threshold`)."""
    calibration = require_calibration(scorer) if llr else None
    cfg = _scoring_cfg(scorer)
    frontend = build_frontend(cfg["frontend"], device=scorer.device)  # the device matters to SSL only
    check_feature_shape(
        cfg["model"]["input_shape"], frontend.feature_shape,
        f"{scorer.source}: front end {cfg['frontend'].get('model', frontend.name)}",
    )
    scorer.announce()
    results = score_audio_files(
        files, scorer.model, scorer.loss_fn, frontend, scorer.device, crop=crop, batch_size=scorer.batch_size,
        amp=scorer.amp, channels_last=True, fixed_batch=scorer.fixed_batch,
        threshold=None if llr else threshold, progress=progress,
    )
    rows = []
    for r in results:
        row: dict[str, Any] = {"file": r.path, "score": r.score}
        decision = r.decision
        if calibration is not None:
            row["llr"] = float(calibration.apply(np.array([r.score]))[0])
            decision = decide(row["llr"], threshold)
        row.update({"decision": decision or "n/a", "threshold": threshold, "windows": r.n_windows,
                    "duration_s": round(r.duration_s, 3)})
        rows.append(row)
    return rows


def to_llr(scorer: Scorer, scores: Scores) -> Scores:
    """``scores`` with each score replaced by its calibrated LLR (`require_calibration`)."""
    return replace(scores, scores=require_calibration(scorer).apply(scores.scores))


def score_partition(
    scorer: Scorer, partition: str, *, features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, dataset: str | None = None, num_workers: int = 0,
    progress: bool = True,
) -> Scores:
    """Scores of a whole partition, from the feature store under ``features`` or raw audio under
    ``data_root`` (``dataset`` layout overrides the recipe's)."""
    cfg = _scoring_cfg(scorer)
    if features is not None:
        data = open_store_partition(features, cfg, partition)
    else:
        if dataset is not None:
            cfg = {**cfg, "data": {**(cfg.get("data") or {}), "dataset": dataset}}
        data = open_audio_partition(data_root, cfg, partition)
    scorer.announce()
    loader = DataLoader(data, batch_size=scorer.batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_batch)
    return score_loader(
        scorer.model, scorer.loss_fn, loader, scorer.device, amp=scorer.amp, channels_last=True,
        fixed_batch=scorer.fixed_batch, progress=progress, desc=f"score {partition}",
    )
