"""Scoring recordings of any length, rate and channel count by windows (generate_score.py --audio)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from data.audio import load_audio
from engine.score_batches import forward_for_scores
from utils.errors import UserError


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of windows of ``window`` samples every ``hop`` samples covering a clip of ``n_samples``.

    A clip no longer than one window gets one window at 0 (the front end tiles it). Otherwise windows
    start every ``hop`` samples and the last one is moved back to end at the clip's end, so every
    window holds real audio only and the tail is covered.
    """
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


@dataclass
class FileScore:
    """Score of one recording: mean of its windows' scores (higher = bona fide)."""

    path: str
    score: float
    n_windows: int
    duration_s: float
    decision: str = ""


def _iter_windows(
    paths: Sequence[Path], window: int, hop: int, crop: str, load: Callable[[Path], np.ndarray]
) -> Iterator[tuple[int, np.ndarray, float]]:
    for index, path in enumerate(paths):
        wave = load(path)
        duration = wave.shape[0] / 16000.0
        starts = [0] if crop == "first" else window_starts(wave.shape[0], window, hop)
        for start in starts:
            yield index, wave[start : start + window], duration


def decide(score: float, threshold: float | None) -> str:
    """``bonafide`` if score ≥ threshold, else ``spoof``; ``""`` without a finite threshold."""
    if threshold is None or not math.isfinite(threshold):
        return ""
    return "bonafide" if score >= threshold else "spoof"


def score_audio_files(
    paths: Sequence[str | os.PathLike],
    model: nn.Module,
    loss_fn: nn.Module,
    frontend: Any,
    device: torch.device,
    *,
    crop: str = "windows",
    hop_fraction: float = 0.5,
    batch_size: int = 16,
    amp: str = "none",
    channels_last: bool = False,
    fixed_batch: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> list[FileScore]:
    """Score recordings of any length, sample rate and channel count.

    Each file is read as 16 kHz mono (`data.audio.load_audio`), cut into windows of the front end's
    input length (``frontend.n_samples``: 64,600 for XLS-R-LCNN, 80,000 for F0) every
    ``hop_fraction`` · window samples, and the window scores are averaged. ``crop="first"`` scores the
    first window only (the training crop). Windows of all files are batched together. With
    ``threshold`` each result carries ``bonafide`` (score ≥ threshold) or ``spoof``. ``amp``,
    ``channels_last``, ``fixed_batch``: as in `score_loader`.
    """
    if crop not in ("windows", "first"):
        raise UserError(f"crop {crop!r}: expected 'windows' or 'first'")
    window = int(frontend.n_samples)
    hop = max(1, int(round(window * hop_fraction)))
    files = [Path(p) for p in paths]
    sums = np.zeros(len(files))
    counts = np.zeros(len(files), dtype=np.int64)
    durations = np.zeros(len(files))
    model.eval()
    loss_fn.eval()

    def flush(batch: list[tuple[int, np.ndarray]]) -> None:
        features = torch.from_numpy(frontend.extract([w for _, w in batch])).to(device)
        with torch.inference_mode():
            embedding, logits = forward_for_scores(model, features, device, amp, fixed_batch, channels_last)
            window_scores = loss_fn.score(embedding, logits).double().cpu().numpy()
        for (index, _), score in zip(batch, window_scores, strict=True):
            sums[index] += score
            counts[index] += 1

    bar = tqdm(total=len(files), desc="score", unit="file", disable=not progress, dynamic_ncols=True)
    batch: list[tuple[int, np.ndarray]] = []
    for index, wave, duration in _iter_windows(files, window, hop, crop, load_audio):
        if durations[index] == 0.0:
            durations[index] = duration
            bar.update(1)
        batch.append((index, wave))
        if len(batch) >= batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    results = []
    for i, path in enumerate(files):
        score = float(sums[i] / counts[i])
        results.append(
            FileScore(str(path), score, int(counts[i]), float(durations[i]), decide(score, threshold))
        )
    return results
