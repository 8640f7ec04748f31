"""What generate_score.py does, as library calls: load a trained countermeasure once, then score a
partition (feature store or raw audio) or arbitrary recordings with it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from data.dataset import collate_batch
from engine.partitions import (
    check_feature_shape,
    open_audio_partition,
    open_partition,
    open_store_partition,
    open_waveform_partition,
    score_crop,
    scoring_batch,
    waveform_input_cfg,
)
from engine.score_batches import (
    Scores,
    compile_for_scoring,
    default_batch_size,
    resolve_scoring_amp,
    score_loader,
)
from engine.score_windows import (
    MIN_DURATION_S,
    FileScore,
    WindowScorer,
    decide,
    iter_audio_scores,
    torch_window_scorer,
)
from engine.scoring_model import load_scoring_model
from models.countermeasure import WithFrontEnd
from models.frontends import build_frontend
from utils.calibration import Calibration
from utils.checkpoint import state_sha256, unwrap
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

    def window_scorer(self) -> tuple[int, WindowScorer]:
        """(window length in samples, `engine.score_windows.WindowScorer`) for scoring recordings: the
        front end of the input recipe (checked against the model's input shape), then the model."""
        cfg = _scoring_cfg(self)
        frontend = build_frontend(cfg["frontend"], device=self.device)  # the device matters to SSL only
        check_feature_shape(
            cfg["model"]["input_shape"], frontend.feature_shape,
            f"{self.source}: front end {cfg['frontend'].get('model', frontend.name)}",
        )
        self.announce()
        return int(frontend.n_samples), torch_window_scorer(
            self.model, self.loss_fn, frontend, self.device, amp=self.amp, fixed_batch=self.fixed_batch,
            channels_last=True,
        )


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


#: Columns of a per-recording result row, in order (``llr`` only with LLRs, ``window_scores`` on request).
RESULT_COLUMNS = ("file", "score", "llr", "decision", "threshold", "windows", "duration_s", "status", "error",
                  "window_scores")


def result_columns(llr: bool = False, window_scores: bool = False) -> list[str]:
    """The columns of `iter_recording_rows`' rows for these options."""
    skip = {name for name, on in (("llr", llr), ("window_scores", window_scores)) if not on}
    return [name for name in RESULT_COLUMNS if name not in skip]


def iter_recording_rows(
    scorer: Any, files: Sequence[Path], *, crop: str = "windows", threshold: float | None = None,
    llr: bool = False, window_scores: bool = False, min_duration_s: float = MIN_DURATION_S,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Score audio files (any length, rate, channels) -> one result row per file, in order, as each is
    done: file, score, decision, threshold, windows, duration_s, status (``ok`` or ``error``) and error
    (why a file was skipped: unreadable, empty, shorter than ``min_duration_s``; its score is None).
    Decisions at ``threshold`` (None: scores only). ``scorer``: a `Scorer`, or any object with the same
    ``calibration``, ``source``, ``batch_size``, ``announce()`` and ``window_scorer()`` (the ONNX Runtime
    scorer, `engine.onnx_scoring`). The model is set up (and its input checked) before this returns.

    ``llr``: rows also carry ``llr``, the checkpoint's calibration of the score (`require_calibration`), and
    the decision compares the LLR with ``threshold`` (e.g. `utils.calibration.bayes_threshold`).
    ``window_scores``: rows also carry each window's ``start_s``, ``end_s``, ``score`` (and ``llr``)."""
    calibration = require_calibration(scorer) if llr else None
    window, score_windows = scorer.window_scorer()
    results = iter_audio_scores(
        files, score_windows, window, crop=crop, batch_size=scorer.batch_size,
        threshold=None if llr else threshold, min_duration_s=min_duration_s, progress=progress,
    )
    columns = result_columns(llr, window_scores)
    return ({key: value for key, value in _result_row(r, calibration, threshold).items() if key in columns}
            for r in results)


def _result_row(r: FileScore, calibration: Calibration | None, threshold: float | None) -> dict[str, Any]:
    """Every column of `RESULT_COLUMNS` for one recording."""
    if not r.ok:
        return {"file": r.path, "score": None, "llr": None, "decision": "n/a", "threshold": threshold,
                "windows": 0, "duration_s": None, "status": "error", "error": r.error, "window_scores": []}
    windows = [{"start_s": start, "end_s": end, "score": score} for start, end, score in r.windows]
    row: dict[str, Any] = {"file": r.path, "score": r.score, "llr": None}
    decision = r.decision
    if calibration is not None:
        row["llr"] = float(calibration.apply(np.array([r.score]))[0])
        decision = decide(row["llr"], threshold)
        window_llrs = calibration.apply(np.array([w["score"] for w in windows]))
        for window, llr in zip(windows, window_llrs, strict=True):
            window["llr"] = float(llr)
    row.update({"decision": decision or "n/a", "threshold": threshold, "windows": r.n_windows,
                "duration_s": round(r.duration_s, 3), "status": "ok", "error": "", "window_scores": windows})
    return row


def to_llr(scorer: Scorer, scores: Scores) -> Scores:
    """``scores`` with each score replaced by its calibrated LLR (`require_calibration`)."""
    return replace(scores, scores=require_calibration(scorer).apply(scores.scores))


def full_length_min_samples(scorer: Scorer, key: str) -> int:
    """The fewest samples ``scorer``'s model takes when it scores whole utterances (``full``, chosen by
    ``key``; `whole_min_samples`). A model compiled for one shape raises a one-line `UserError` too, before
    anything is scored."""
    where = f"{key}: full: the {scorer.cfg['model'].get('name')} model of {scorer.source}"
    if scorer.fixed_batch is not None:
        raise UserError(f"{where} was compiled (--compile) for one input shape; score full utterances "
                        "without --compile")
    return whole_min_samples(scorer.model, scorer.cfg, scorer.input_cfg, where)


def whole_min_samples(model: nn.Module, cfg: dict[str, Any], input_cfg: dict[str, Any], where: str) -> int:
    """The fewest samples ``model`` (a raw-wave back end, or a `WithFrontEnd` of recipe ``cfg`` whose
    ``input_cfg`` takes raw waves) takes on whole utterances: its back end's ``min_frames`` through the SSL
    front end's conv stack, or a raw-wave model's ``min_samples``. A model that takes only its
    ``input_shape`` (a fixed flatten size: lcnn, sls) or that reads features of a fixed length (a store, or
    a frozen front end the recipe runs outside the model) raises a one-line `UserError` starting with
    ``where``."""
    if (input_cfg.get("frontend") or {}).get("name") != "waveform":
        raise UserError(f"{where} reads {cfg['frontend'].get('name')} features of frontend.n_samples "
                        "samples, not raw waves; score it with first")
    frontend = getattr(model, "frontend", None)
    back_end = model.model if isinstance(model, WithFrontEnd) else model
    min_frames = getattr(back_end, "min_frames", None)
    if frontend is None:
        least = getattr(back_end, "min_samples", None)
    else:
        least = None if min_frames is None else getattr(frontend, "samples_for", lambda _: None)(min_frames)
    if least is None:
        shape = list(getattr(back_end, "input_shape", cfg["model"].get("input_shape", [])))
        raise UserError(f"{where} takes inputs of exactly {shape} (a fixed number of frames); score it "
                        "with first")
    return int(least)


def open_run_partition(
    cfg: dict[str, Any], partition: str, model: nn.Module, frontend: nn.Module | None = None, *,
    source: str = "this run", features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, on_the_fly: bool = False,
) -> Dataset:
    """``partition`` as the trainer scores it with the model it trains, the same way generate_score.py
    scores the run's checkpoint: `engine.partitions.score_crop` of recipe ``cfg`` picks the training input
    (`engine.partitions.open_partition`) or whole utterances, tiled up to what ``model`` (with ``frontend``,
    the front end trained inside it, if any) takes (`whole_min_samples`; ``source`` names the run in its
    errors). Data arguments as in `engine.partitions.open_partition`."""
    crop, key = score_crop(cfg)
    if crop != "full":
        return open_partition(cfg, partition, features=features, data_root=data_root, on_the_fly=on_the_fly)
    scoring = model if frontend is None else WithFrontEnd(model, frontend)
    least = whole_min_samples(scoring, cfg, cfg if frontend is None else waveform_input_cfg(cfg),
                              f"{key}: full: the {cfg['model'].get('name')} model of {source}")
    return open_waveform_partition(data_root, cfg, partition, crop="full", min_samples=least)


def open_scored_partition(
    scorer: Scorer, partition: str, *, features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, dataset: str | None = None,
    manifests: Mapping[str, str] | None = None, crop: str | None = None,
) -> Dataset:
    """The dataset of ``partition`` as the scorer's model takes it: the feature store under ``features``,
    or raw audio under ``data_root`` (``dataset`` layout overrides the recipe's) or listed in ``manifests``
    ({partition: manifest file}, added to those the recipe names); rows in protocol order.
    ``crop`` (``first`` | ``full``) overrides the checkpoint recipe's ``data.score_crop``
    (`engine.partitions.score_crop`); ``full``: whole utterances, one per batch (`scoring_batch_size`)."""
    cfg = _scoring_cfg(scorer)
    data_cfg = dict(cfg.get("data") or {})
    if dataset is not None:
        data_cfg["dataset"] = dataset
    if manifests:
        recorded = data_cfg.get("manifests") if data_cfg.get("dataset") == "manifest" else None
        data_cfg.update(dataset="manifest", manifests={**(recorded or {}), **manifests})
    cfg = {**cfg, "data": data_cfg}
    how, key = score_crop(cfg, data_cfg.get("dataset"), crop)
    if how == "full":
        least = full_length_min_samples(scorer, key)  # before anything is read
        if features is not None:
            raise UserError(f"{key}: full scores raw audio: give the data root, not the feature store "
                            f"{features}")
        return open_waveform_partition(data_root, cfg, partition, crop="full", min_samples=least)
    if features is not None:
        return open_store_partition(features, cfg, partition)
    return open_audio_partition(data_root, cfg, partition)


def scoring_batch_size(scorer: Scorer, data: Dataset) -> int:
    """Utterances per batch for ``data``: the scorer's, or 1 for whole utterances (`scoring_batch`)."""
    return scoring_batch(data, scorer.batch_size)


def scoring_settings(scorer: Scorer) -> dict[str, Any]:
    """What a partition's scores depend on besides its data: the weights (sha256), front end, batch size,
    precision, compiled or not, device type (`engine.score_stream` resumes only with the same ones)."""
    weights = state_sha256(unwrap(scorer.model).state_dict(), scorer.loss_fn.state_dict())
    return {"weights_sha256": weights, "frontend": _scoring_cfg(scorer)["frontend"],
            "batch_size": scorer.batch_size, "amp": scorer.amp, "compiled": scorer.fixed_batch is not None,
            "device": scorer.device.type}


def score_partition(
    scorer: Scorer, partition: str, *, features: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, dataset: str | None = None,
    manifests: Mapping[str, str] | None = None, crop: str | None = None, num_workers: int = 0,
    progress: bool = True,
) -> Scores:
    """Scores of a whole partition (`open_scored_partition`) in one process, kept in memory."""
    data = open_scored_partition(scorer, partition, features=features, data_root=data_root, dataset=dataset,
                                 manifests=manifests, crop=crop)
    scorer.announce()
    loader = DataLoader(data, batch_size=scoring_batch_size(scorer, data), shuffle=False,
                        num_workers=num_workers, collate_fn=collate_batch)
    return score_loader(
        scorer.model, scorer.loss_fn, loader, scorer.device, amp=scorer.amp, channels_last=True,
        fixed_batch=scorer.fixed_batch, progress=progress, desc=f"score {partition}",
    )
